"""Shared test setup: ROS isolation for the whole session and a per-test rclpy context."""

from __future__ import annotations

import ast
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapflow_ros.ros.isolation import isolated_ros_env

REPO = Path(__file__).resolve().parents[1]

# Before any rclpy.init: a random domain and localhost-only discovery keep tests off real
# robots and off each other. Subprocesses inherit it.
os.environ.update(isolated_ros_env())


class RosHarness:
    """One rclpy context per test: creates nodes, spins them, destroys every one at the end."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list = []

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, factory: Callable, *args, **kwargs):
        """factory(*args, context=..., **kwargs), added to the executor."""
        return self.add(factory(*args, context=self.context, **kwargs))

    def spin_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, timeout_s=seconds)

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def ros() -> Iterator[RosHarness]:
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> str:
    """The session's temporary directory, above every tmp_path: the allowed_roots of nodes whose
    checkpoints, bags and outputs all lie in temporary directories."""
    return str(tmp_path_factory.getbasetemp())


def save_small_student(directory: Path, seed: int = 0, **config) -> Path:
    """A small built-in policy saved as a checkpoint, its phi non-zero as after distillation.

    Without config: shaped for the synthetic task, normalisation fitted on its data.
    """
    import torch

    from snapflow_distill.synthetic import make_dataset, task_config
    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
    from snapflow_ros.files import save_policy

    torch.manual_seed(seed)
    if config:
        policy = BuiltinVLA(BuiltinVLAConfig(**config))
    else:
        data = make_dataset(64, seed=1)[0]
        policy = BuiltinVLA(task_config(width=32, num_layers=2))
        policy.state_normalizer.fit(data.states)
        policy.action_normalizer.fit(data.actions)
    with torch.no_grad():
        policy.target_time.linear_out.weight.normal_(0, 0.3)
    return save_policy(policy, directory)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict:
    """Two demo bags (3 episodes each), the YAML that reads them and an untrained teacher for them."""
    from snapflow_ros.bags.dataset import load_bag_dataset
    from snapflow_ros.bags.demo_bags import DemoBagSpec, write_demo_bags

    spec = DemoBagSpec(episodes=3)
    root = tmp_path_factory.mktemp("recorded")
    bags = write_demo_bags(root / "bags", 2, spec)
    config = root / "bag_dataset.yaml"
    spec.dataset_config().write_yaml(config)
    data = load_bag_dataset(bags, spec.dataset_config(), chunk_size=6)
    return {"bags": [str(b) for b in bags], "config": str(config), "spec": spec,
            "teacher": str(demo_teacher(root / "teacher", data))}


def demo_teacher(directory: Path, data, seed: int = 0) -> Path:
    """An untrained built-in teacher (phi zero) shaped and normalised for a BagChunkDataset."""
    import torch

    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
    from snapflow_ros.files import save_policy

    torch.manual_seed(seed)
    policy = BuiltinVLA(BuiltinVLAConfig(cameras=data.cameras, state_dim=len(data.joint_names),
                                         action_dim=len(data.action_names), chunk_size=6, width=32,
                                         num_heads=4, num_layers=1, joint_names=data.action_names))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions[data.action_masks])
    return save_policy(policy, directory)


def tiny_synthetic_policy(data):
    """A one-layer built-in VLA for the synthetic task's data, normalised to it (seeded)."""
    import torch

    from snapflow_distill.synthetic import task_config
    from snapflow_ros.families.builtin import BuiltinVLA

    torch.manual_seed(0)
    policy = BuiltinVLA(task_config(width=16, num_heads=2, num_layers=1))
    policy.state_normalizer.fit(data.states)
    policy.action_normalizer.fit(data.actions)
    return policy


def top_level_imports(path: Path) -> set[str]:
    """First components of the absolute imports of a file, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names
