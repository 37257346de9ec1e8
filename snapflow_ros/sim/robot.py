"""MetaWorldRobot: one Meta-World environment as a position-controlled robot.

State (what a JointState would carry): the end-effector position and the gripper opening,
named STATE_NAMES. Actions use the same names: a target end-effector position and a target
opening, which the robot tracks at Meta-World's speed limit (1 cm per step), like a position
controller executing a JointTrajectory. Camera: the top view framed on the workspace, rendered
headless (EGL) with shadows, reflections and anti-aliasing off, and the goal drawn as a green
marker of the success radius so it is visible at a few dozen pixels. Layouts are drawn from the
robot's seed, one per reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from snapflow_ros.errors import InputError
from snapflow_ros.sim.task import SUCCESS_RADIUS, SimTask

STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")
ACTION_SCALE = 0.01          # Meta-World: metres per step at action 1
CAMERA = "topview"
# The top camera framed on the workspace (hand starts to goals, y 0.38-0.98 m at the hand's height)
# instead of Meta-World's whole-table view: the goal covers a few pixels more at a few dozen.
CAMERA_POSITION = (0.0, 0.68, 1.5)
CAMERA_FOVY = 25.0           # degrees (Meta-World: 45)
GOAL_MARKER_SIZE = SUCCESS_RADIUS  # metres (Meta-World's own goal site is a few millimetres)
GOAL_RGBA = (0.1, 0.9, 0.1, 1.0)


@dataclass(frozen=True)
class SimObservation:
    image: np.ndarray   # (H, W, 3) uint8 RGB, or (0, 0, 3) when rendering is off
    state: np.ndarray   # (4,) float64 in STATE_NAMES order


@dataclass(frozen=True)
class StepOutcome:
    observation: SimObservation
    success: bool
    failure: str        # why the episode failed ("" while it has not)

    @property
    def done(self) -> bool:
        return self.success or bool(self.failure)


class MetaWorldRobot:
    def __init__(self, task: SimTask, seed: int, image_size: int = 64, render: bool = True) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; osmesa also works
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task, self.image_size, self.render = task, image_size, render
        env = ALL_V3_ENVIRONMENTS[task.env_name](render_mode="rgb_array" if render else None, camera_name=CAMERA,
                                                width=image_size, height=image_size)
        # A fresh layout every reset, drawn from this robot's seed (Meta-World freezes it by default).
        env._partially_observable = False
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.seed(seed)
        quality = env.model.vis.quality
        quality.shadowsize, quality.offsamples = 0, 0  # 10x faster frames on a CPU
        camera = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        env.model.cam_pos[camera], env.model.cam_fovy[camera] = CAMERA_POSITION, CAMERA_FOVY
        goal = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
        if goal >= 0:
            env.model.site_size[goal] = GOAL_MARKER_SIZE
            env.model.site_rgba[goal] = GOAL_RGBA
        self.env, self._mujoco = env, mujoco
        self.steps = 0
        self.full_obs = np.zeros(39)
        self.start = np.zeros(3)
        self.fingertip_offset = np.zeros(3)
        self._scene_ready = False

    @property
    def goals(self) -> np.ndarray:
        """(k, 3) goals where the fingertips must get (any one of them for success)."""
        if self.task.goals:
            tips = self.start + self.fingertip_offset
            origin = tips[:2] if self.task.goals_from_start else np.zeros(2)
            return np.array([(*(origin + xy), tips[2]) for xy in self.task.goals])
        return np.asarray(self.env._target_pos, dtype=np.float64)[None]

    @property
    def hand_goals(self) -> np.ndarray:
        """Where the hand (the state's ee_x, ee_y, ee_z) must be for the fingertips to be on each goal."""
        return self.goals - self.fingertip_offset

    @property
    def pillar(self) -> np.ndarray:
        """(x, y) of a detour task's invisible pillar: halfway from the start to the (first) goal."""
        return (self.start[:2] + self.goals[0, :2]) / 2

    def reset(self) -> SimObservation:
        self.full_obs, _ = self.env.reset()
        self.steps = 0
        self.start = self.full_obs[:3].copy()
        # Success is judged at the fingertips (Meta-World's tcp_center), 4.5 cm below the hand that the
        # state reports: a planar goal sits at their height, so the hand never has to change height.
        self.fingertip_offset = np.asarray(self.env.tcp_center, dtype=np.float64) - self.start
        if self.task.planar:
            goal = self.goals[0]
            goal[2] = self.start[2] + self.fingertip_offset[2]
            self.env._target_pos = goal
            self.env.model.site("goal").pos = goal
            self._mujoco.mj_forward(self.env.model, self.env.data)  # else the first frame shows the old goal
        if self.render and not self._scene_ready:  # the renderer exists once the env has been reset
            # 2x faster frames on a CPU without reflections, shadows and the skybox.
            scene = self.env.mujoco_renderer._get_viewer("rgb_array").scn
            for flag in (self._mujoco.mjtRndFlag.mjRND_REFLECTION, self._mujoco.mjtRndFlag.mjRND_SHADOW,
                         self._mujoco.mjtRndFlag.mjRND_SKYBOX):
                scene.flags[flag] = 0
            self._scene_ready = True
        return self._observe()

    def _observe(self, render: bool = True) -> SimObservation:
        if self.render and render and len(self.goals) > 1:
            viewer = self.env.mujoco_renderer._get_viewer("rgb_array")
            for goal in self.goals[1:]:  # Meta-World's goal site shows the first; markers last one frame
                viewer.add_marker(pos=goal, size=np.full(3, GOAL_MARKER_SIZE), rgba=np.array(GOAL_RGBA),
                                  type=self._mujoco.mjtGeom.mjGEOM_SPHERE)
        image = self.env.render() if self.render and render else np.zeros((0, 0, 3), np.uint8)
        state = np.concatenate([self.full_obs[:3], [np.clip(self.full_obs[3], 0.0, 1.0)]])
        return SimObservation(np.ascontiguousarray(image), state)

    def step(self, target: np.ndarray, render: bool = True) -> StepOutcome:
        """Moves toward `target` (STATE_NAMES order) for one environment step; `render=False` skips
        the camera frame (an empty image) when nobody will look at it."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (4,) or not np.all(np.isfinite(target)):
            raise InputError(f"target must be 4 finite values {STATE_NAMES}, got {target}")
        delta = np.clip((target[:3] - self.full_obs[:3]) / ACTION_SCALE, -1.0, 1.0)
        grip = 1.0 if target[3] < 0.5 else -1.0  # Meta-World: +1 closes, -1 opens
        self.full_obs, _, _, _, info = self.env.step(np.append(delta, grip).astype(np.float32))
        self.steps += 1
        failure = ""
        if self.task.pillar_radius > 0 and np.linalg.norm(self.full_obs[:2] - self.pillar) < self.task.pillar_radius:
            failure = "hit the pillar"
        if not failure and self.task.failure is not None:
            failure = self.task.failure(self)
        if len(self.goals) > 1:  # Meta-World judges its one goal; here any of them counts
            tips = np.asarray(self.env.tcp_center, dtype=np.float64)
            reached = bool(np.min(np.linalg.norm(self.goals - tips, axis=1)) <= SUCCESS_RADIUS)
        else:
            reached = bool(info["success"])
        success = reached and not failure
        if not success and not failure and self.steps >= self.task.max_steps:
            failure = "out of steps"
        return StepOutcome(self._observe(render), success, failure)

    def close(self) -> None:
        self.env.close()
