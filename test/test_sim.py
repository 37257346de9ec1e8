"""The simulated robot (Meta-World, headless): experts solve every task, the mean of a multi-modal
task's modes fails (the detour's pillar, the mirrored goals), layouts follow the seed, the camera
shows the goals, tasks load from a user's file, a closed-loop episode runs a policy like the node
does, and the evaluation's statistics and plot."""

from __future__ import annotations

import numpy as np
import pytest

from snapflow_ros.errors import ConfigError
from snapflow_ros.sim.evaluation import SIM_EXECUTOR
from snapflow_ros.sim.robot import STATE_NAMES, MetaWorldRobot
from snapflow_ros.sim.rollout import CAMERA, run_episode
from snapflow_ros.sim.tasks import TaskExpert, get_task, load_tasks

BUILTIN = load_tasks()


def _expert_episode(robot: MetaWorldRobot, expert: TaskExpert):
    robot.reset()
    expert.reset()
    while True:
        outcome = robot.step(expert.target())
        if outcome.done:
            return outcome


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_the_expert_solves_the_task(name):
    robot = MetaWorldRobot(get_task(name), seed=3, render=False)
    try:
        expert = robot.task.expert(robot, 4)
        outcomes = [_expert_episode(robot, expert) for _ in range(5)]
    finally:
        robot.close()
    assert all(o.success for o in outcomes), [o.failure for o in outcomes]


def _mode_experts(robot: MetaWorldRobot, modes: int) -> list[TaskExpert]:
    experts = [robot.task.expert(robot, 10 + m) for m in range(modes)]
    for mode, expert in enumerate(experts):
        expert.reset()
        expert.mode = mode
    return experts


def _balanced_modes(robot: MetaWorldRobot, modes: int) -> None:
    expert = robot.task.expert(robot, 1)
    seen = []
    for _ in range(3 * modes):
        assert _expert_episode(robot, expert).success
        seen.append(expert.mode)
    assert sorted(seen) == sorted(list(range(modes)) * 3)  # shuffled rounds: as many of each mode


def test_detour_routes_are_balanced_and_their_average_hits_the_pillar():
    robot = MetaWorldRobot(get_task("reach-detour"), seed=0, render=False)
    try:
        _balanced_modes(robot, 2)
        robot.reset()
        left, right = _mode_experts(robot, 2)
        split = None
        while True:  # what mean-seeking sampling does: the average of the two experts' targets
            outcome = robot.step((left.target() + right.target()) / 2)
            if split is None and left.waypoint == 1:
                split = robot.steps  # where the routes part
            if outcome.done:
                break
        # Within one 8-step chunk of the split: a policy executing whole chunks cannot correct in time.
        assert outcome.failure == "hit the pillar" and robot.steps - split <= 8, (outcome.failure, robot.steps, split)
    finally:
        robot.close()


def test_mirrored_goals_are_symmetric_and_their_average_reaches_neither():
    robot = MetaWorldRobot(get_task("reach-either"), seed=0, render=False)
    try:
        robot.reset()
        start, goals = robot.start, robot.hand_goals
        assert np.allclose((goals[0] + goals[1]) / 2, [start[0], goals[0][1], start[2]])  # mirrored about x = start
        assert np.allclose(goals[:, 1], goals[0][1])
        _balanced_modes(robot, 2)
        robot.reset()
        left, right = _mode_experts(robot, 2)
        xs = []
        while True:
            outcome = robot.step((left.target() + right.target()) / 2)
            xs.append(robot.full_obs[0] - start[0])
            if outcome.done:
                break
        # The dynamics keep the mean on the mirror line too: it heads between the goals and times out.
        assert outcome.failure == "out of steps" and max(map(abs, xs)) < 0.01, max(map(abs, xs))
    finally:
        robot.close()


def _green(image: np.ndarray) -> np.ndarray:
    return (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 100)


def test_layouts_follow_the_seed_and_the_camera_shows_the_goal():
    def goals(seed: int) -> np.ndarray:
        robot = MetaWorldRobot(get_task("reach"), seed=seed, image_size=48)
        try:
            found, markers = [], []
            for _ in range(3):
                observation = robot.reset()
                found.append(robot.goals[0].copy())
                image = observation.image
                assert image.shape == (48, 48, 3) and image.dtype == np.uint8
                assert observation.state.shape == (len(STATE_NAMES),)
                marker = _green(image)
                assert marker.sum() >= 3  # the goal marker
                # The first frame of an episode already shows this episode's goal.
                assert np.array_equal(marker, _green(robot.step(observation.state).observation.image))
                markers.append(marker)
            assert not np.array_equal(markers[0], markers[1])
            return np.stack(found)
        finally:
            robot.close()

    first = goals(5)
    assert np.array_equal(first, goals(5)) and not np.allclose(first, goals(6))
    assert len({tuple(g) for g in first}) == 3  # a new layout every reset
    with pytest.raises(ConfigError, match="unknown sim task 'fly'"):
        get_task("fly")


class _ExpertPolicy:
    """A ServedPolicy stand-in that answers with the expert's next targets."""

    policy_id = "expert"

    def __init__(self, expert: TaskExpert) -> None:
        self.expert, self.calls = expert, 0

    def predict(self, observation, seed: int = 0, continuation=None) -> np.ndarray:
        assert observation.images[CAMERA].shape == (32, 32, 3) and observation.instruction  # a rendered frame
        self.calls += 1
        return np.stack([self.expert.target()] * 4)


def test_closed_loop_episode_runs_a_policy_chunk_by_chunk():
    robot = MetaWorldRobot(get_task("reach"), seed=0, image_size=32)
    try:
        expert = robot.task.expert(robot, 0)
        expert.reset()
        policy = _ExpertPolicy(expert)
        result = run_episode(robot, policy, SIM_EXECUTOR, 3, seed=0)  # 3 of each chunk's 4 targets
        assert result.success and policy.calls == len(result.latencies_ms) == -(-result.steps // 3)
        with pytest.raises(ValueError, match="4 finite values"):
            robot.step(np.array([0.0, np.nan, 0.2, 1.0]))
    finally:
        robot.close()


def test_wilson_interval_matches_known_values():
    from snapflow_ros.sim.statistics import wilson_interval

    low, high = wilson_interval(10, 20)  # 50%: the textbook interval [0.299, 0.701]
    assert abs(low - 0.2993) < 1e-3 and abs(high - 0.7007) < 1e-3
    assert wilson_interval(0, 30)[0] == 0.0 and 0.10 < wilson_interval(0, 30)[1] < 0.12
    assert wilson_interval(30, 30)[1] == 1.0


def test_report_pools_tasks_and_plots_every_policy(tmp_path):
    from snapflow_ros.sim.evaluation import EpisodeResult, overall, summarize, write_plot

    def rows(successes: int, latency: float) -> dict:
        results = [EpisodeResult(i < successes, "" if i < successes else "hit the pillar", 40, [latency])
                   for i in range(10)]
        return summarize(results)

    per_task = {"a": {"teacher@10": rows(9, 8.0), "teacher@1": rows(3, 2.0)},
                "b": {"teacher@10": rows(7, 9.0), "teacher@1": rows(5, 2.5)}}
    assert per_task["a"]["teacher@1"]["failures"] == {"hit the pillar": 7}
    pooled = overall(per_task)
    assert pooled["teacher@10"]["successes"] == 16 and pooled["teacher@10"]["episodes"] == 20
    assert pooled["teacher@1"]["latency_ms_p50_mean"] == 2.25
    write_plot(per_task, tmp_path / "plot.svg")
    svg = (tmp_path / "plot.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<circle") == 2 and svg.count("<rect x=") == 2
    assert "teacher@10" in svg and "teacher@1" in svg


def test_latency_sweep_pools_jumps_by_count_and_plots_success_and_jump(tmp_path):
    from snapflow_ros.sim.evaluation import EpisodeResult, overall, summarize, write_latency_plot

    def rows(jumps: list[float]) -> dict:
        return summarize([EpisodeResult(True, "", 40, [1.0], boundary_jumps=jumps)])

    sweep = {}
    for latency, scale in (("0", 0.0), ("100", 1.0), ("200", 2.0)):
        per_task = {"a": {"plain": rows([scale]), "rtc": rows([0.1 * scale])},
                    "b": {"plain": rows([3 * scale] * 3), "rtc": rows([0.1 * scale] * 3)}}
        sweep[latency] = {"tasks": per_task, "overall": overall(per_task)}
    assert sweep["100"]["overall"]["plain"]["boundary_jump_mean"] == pytest.approx((1 + 9) / 4)  # by switch
    write_latency_plot(sweep, tmp_path / "sweep.svg")
    svg = (tmp_path / "sweep.svg").read_text()
    assert svg.count("<polyline") == 4 and svg.count("<circle") == 12  # 2 panels x 2 policies x 3 latencies
    assert "mean jump at chunk switches" in svg and ">200<" in svg


def test_demo_cache_is_kept_for_the_same_settings_and_cleared_otherwise(tmp_path):
    from snapflow_ros.ros.sim_demo import is_cached, stamp_cache

    directory = tmp_path / "bags"
    key = {"tasks": ("reach", "reach-detour"), "demo_episodes": 40}
    assert not is_cached(directory, key)
    directory.mkdir()
    (directory / "reach").write_text("recorded")
    stamp_cache(directory, key)
    assert is_cached(directory, key) and (directory / "reach").is_file()
    assert not is_cached(directory, key | {"demo_episodes": 41}) and not directory.exists()


def test_the_camera_shows_both_mirrored_goals():
    robot = MetaWorldRobot(get_task("reach-either"), seed=0, image_size=48)
    try:
        marker = _green(robot.reset().image)
        columns = np.nonzero(marker.any(axis=0))[0]
        assert marker.sum() >= 6 and columns.min() < 24 - 3 and columns.max() > 24 + 3, columns
        # Two blobs, one each side of the hand's column, with a gap between them.
        assert len(np.setdiff1d(np.arange(columns.min(), columns.max() + 1), columns)) >= 3
        assert np.array_equal(marker, _green(robot.step(robot.reset().state).observation.image))
    finally:
        robot.close()
