"""The hot-swap fault matrix, over real rclpy with the real policy_node: each bad swap (a corrupt
checkpoint, an incomplete ONNX export, another joint layout, a swap while one loads, a swap during
a distillation job) leaves the old policy serving without a gap, the parameters back at what
serves, the reason in the parameter result, node.swap.last_error and /diagnostics, and nothing
published from the bad source. The README's fault table points here."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_policy_node_flow import JOINTS, RATE_HZ, Rig

from conftest import save_small_student
from snapflow_ros.files import checkpoint_id

pytestmark = pytest.mark.ros

RELOAD = ("checkpoint", "backend", "denoising_steps")
MAX_GAP_S = 2.0 / RATE_HZ  # one period between chunks, with jitter (as test_policy_node_flow)
JOB_MAX_GAP_S = 3.0 / RATE_HZ  # beside a training process (niced, yet on the same 2 cores in CI)


def _student(directory: Path, seed: int, joint_names=tuple(JOINTS)) -> Path:
    return save_small_student(directory, seed, cameras=("front", "wrist"), state_dim=3,
                              action_dim=len(joint_names) or 3, chunk_size=6, width=32, num_heads=4,
                              num_layers=1, joint_names=tuple(joint_names))


def _copy(source: Path, directory: Path) -> Path:
    shutil.copytree(source, directory)
    return directory


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The serving student, good swap targets and one broken source per fault, under one root."""
    from snapflow_ros.export.onnx_export import export_policy

    root = tmp_path_factory.mktemp("fault_swaps")
    s = {"root": root, "a": _student(root / "a", 0), "b": _student(root / "b", 1),
         "unnamed": _student(root / "unnamed", 2, joint_names=()),
         "two_dims": _student(root / "two_dims", 3, joint_names=("shoulder", "elbow")),
         "reversed": _student(root / "reversed", 4, joint_names=tuple(reversed(JOINTS))),
         "other_joints": _student(root / "other_joints", 5, joint_names=("x", "y", "z"))}
    s["garbage_config"] = _copy(s["b"], root / "garbage_config")
    (s["garbage_config"] / "config.json").write_text('{"type": "builtin", "width": ')
    s["truncated_weights"] = _copy(s["b"], root / "truncated_weights")
    _truncate(s["truncated_weights"] / "model.safetensors")  # passes the quick checks
    (root / "empty").mkdir()
    s["empty"] = root / "empty"
    export_policy(s["b"], root / "export")  # the real export code: prefix.onnx + expert.onnx + manifest
    s["export"] = root / "export"
    for name, remove in (("no_expert", "expert.onnx"), ("no_prefix", "prefix.onnx"), ("no_manifest", "manifest.json")):
        s[name] = _copy(s["export"], root / name)
        (s[name] / remove).unlink()
    s["truncated_expert"] = _copy(s["export"], root / "truncated_expert")
    _truncate(s["truncated_expert"] / "expert.onnx")  # present, so it passes the quick checks
    s["export_other_joints"] = _copy(s["export"], root / "export_other_joints")
    config = s["export_other_joints"] / "processor" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"joint_names": ["x", "y", "z"]}))
    return s


def _rig(ros, sources, **params) -> Rig:
    return Rig(ros, sources["a"], allowed_roots=[str(sources["root"])], **params)


def _parameters(**values):
    from rclpy.parameter import Parameter

    return [Parameter(name, value=str(value) if isinstance(value, Path) else value) for name, value in values.items()]


def _follow_diagnostics(rig) -> list:
    from diagnostic_msgs.msg import DiagnosticArray

    statuses: list = []
    rig.probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
    return statuses


def _values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _assert_no_gap(times: list[float], limit_s: float = MAX_GAP_S) -> None:
    gaps = np.diff(times)
    assert len(gaps) and gaps.max() < limit_s, gaps


@dataclass(frozen=True)
class Fault:
    source: str          # key of `sources`
    backend: str         # the backend requested with it
    reason: str | tuple[str, ...]  # in the reason the node gives (each of them)
    at_once: bool        # refused by the parameter request itself (else: accepted, fails while loading)


FAULTS = {
    # 1. corrupt checkpoints
    "garbage_config": Fault("garbage_config", "torch", "config.json: invalid JSON", True),
    "not_a_checkpoint": Fault("empty", "torch", "not a checkpoint directory (config.json missing)", True),
    "truncated_weights": Fault("truncated_weights", "torch", "model.safetensors: unreadable", False),
    # 2. incomplete ONNX exports (backend onnxruntime)
    "export_without_expert": Fault("no_expert", "onnxruntime", "incomplete export, expert.onnx missing", True),
    "export_without_prefix": Fault("no_prefix", "onnxruntime", "incomplete export, prefix.onnx missing", True),
    "export_without_manifest": Fault("no_manifest", "onnxruntime", "not a snapflow export (manifest.json missing)",
                                     True),
    "export_truncated_expert": Fault("truncated_expert", "onnxruntime",
                                     ("onnxruntime could not load the export", "/expert.onnx"), False),
    # 3. another joint layout
    "fewer_action_dims": Fault("two_dims", "torch", "policy has 2 action dims, joint_names lists 3", False),
    "joints_reordered": Fault("reversed", "torch", "policy was trained for joints ['wrist', 'elbow', 'shoulder'], "
                              "this node's joint_names are ['shoulder', 'elbow', 'wrist']", False),
    "other_joints": Fault("other_joints", "torch", "policy was trained for joints ['x', 'y', 'z'], "
                          "this node's joint_names are ['shoulder', 'elbow', 'wrist']", False),
    "export_other_joints": Fault("export_other_joints", "onnxruntime", "policy was trained for joints "
                                 "['x', 'y', 'z'], this node's joint_names are ['shoulder', 'elbow', 'wrist']", False),
}


def _says(text: str, reason: str | tuple[str, ...]) -> bool:
    return all(part in text for part in ((reason,) if isinstance(reason, str) else reason))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bad_swap_keeps_the_old_policy_serving(ros, sources, fault):
    case = FAULTS[fault]
    rig = _rig(ros, sources)
    statuses = _follow_diagnostics(rig)
    old_id, before = checkpoint_id(sources["a"]), {name: rig.node.get_parameter(name).value for name in RELOAD}
    assert rig.wait_chunks(3)
    first = len(rig.chunks) - 1  # the last chunk before the request: gaps are measured from it

    result = rig.node.set_parameters_atomically(_parameters(checkpoint=sources[case.source], backend=case.backend))
    if case.at_once:
        assert not result.successful and _says(result.reason, case.reason)
    else:  # accepted: it loads beside the serving policy, fails there and sets the parameters back
        assert result.successful, result.reason
        assert ros.spin_until(lambda: rig.node.counters["swap_failures"] == 1, 30.0)
    assert ros.spin_until(lambda: {n: rig.node.get_parameter(n).value for n in RELOAD} == before, 5.0)
    assert _says(rig.node.swap.last_error, case.reason)
    assert ros.spin_until(lambda: any(_says(_values(s).get("last_swap_error", ""), case.reason) for s in statuses),
                          3.0)
    status = _values(next(s for s in reversed(statuses) if _says(_values(s).get("last_swap_error", ""), case.reason)))
    assert status["policy_id"] == old_id and status["backend"] == "torch" and status["swap_failures"] == "1"

    assert rig.wait_chunks(3)
    assert rig.node.slot.policy.policy_id == old_id and rig.node.counters["swaps"] == 0
    assert {m.policy_id for _, m in rig.chunks} == {old_id}  # nothing from the bad source
    sequences = [m.sequence for _, m in rig.chunks]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    _assert_no_gap([t for t, _ in rig.chunks[first:]])


def test_the_intact_sources_of_the_matrix_swap_in(ros, sources):
    """The faults above are the faults: the student they were copied from, its intact export and a
    checkpoint that records no joint names (only their number is checked) all swap in."""
    rig = _rig(ros, sources)
    assert rig.wait_chunks(2)
    for swaps, (source, backend) in enumerate((("b", "torch"), ("export", "onnxruntime"), ("unnamed", "torch")), 1):
        result = rig.node.set_parameters_atomically(_parameters(checkpoint=sources[source], backend=backend))
        assert result.successful, result.reason
        assert ros.spin_until(lambda n=swaps: rig.node.counters["swaps"] == n, 30.0), rig.node.swap.last_error
        expected = rig.node.slot.policy.policy_id
        assert expected.startswith(f"{source}@")
        assert ros.spin_until(lambda id_=expected: rig.chunks[-1][1].policy_id == id_, 10.0)
    assert rig.node.counters["swap_failures"] == 0 and rig.node.counters["swaps"] == 3


def test_a_swap_while_another_loads_is_refused_at_once(ros, sources):
    rig = _rig(ros, sources)
    loading, release = threading.Event(), threading.Event()
    load = rig.node.swap.load

    def slow_load(*args):  # the node's own loader, held back until released
        loading.set()
        assert release.wait(60.0)
        return load(*args)

    rig.node.swap.load = slow_load
    assert rig.wait_chunks(2)
    first = len(rig.chunks) - 1
    result = rig.node.set_parameters_atomically(_parameters(checkpoint=sources["b"]))
    assert result.successful, result.reason
    assert ros.spin_until(loading.is_set, 5.0)

    started = time.monotonic()
    second = rig.node.set_parameters_atomically(_parameters(checkpoint=sources["unnamed"]))
    assert time.monotonic() - started < 0.5
    assert not second.successful and "a policy is still loading" in second.reason
    assert "a policy is still loading" in rig.node.swap.last_error
    steps = rig.node.set_parameters_atomically(_parameters(denoising_steps=4))  # any reload parameter
    assert not steps.successful and "still loading" in steps.reason
    assert rig.node.get_parameter("checkpoint").value == str(sources["b"])  # the first request's, loading
    assert rig.node.get_parameter("denoising_steps").value == 0
    assert rig.wait_chunks(3)  # the old policy serves meanwhile
    assert {m.policy_id for _, m in rig.chunks} == {checkpoint_id(sources["a"])}

    release.set()  # the first load completes and swaps in
    b_id = checkpoint_id(sources["b"])
    assert ros.spin_until(lambda: rig.chunks[-1][1].policy_id == b_id, 30.0)
    assert rig.node.counters["swaps"] == 1 and rig.node.counters["swap_failures"] == 2

    result = rig.node.set_parameters_atomically(_parameters(checkpoint=sources["a"]))  # a new request works
    assert result.successful, result.reason
    a_id = checkpoint_id(sources["a"])
    assert ros.spin_until(lambda: rig.chunks[-1][1].policy_id == a_id, 30.0)
    assert rig.node.counters["swaps"] == 2
    ids = [m.policy_id for _, m in rig.chunks]
    to_b = ids.index(b_id)
    back_to_a = ids.index(a_id, to_b)
    assert set(ids[:to_b]) == {a_id} and set(ids[to_b:back_to_a]) == {b_id} and set(ids[back_to_a:]) == {a_id}
    _assert_no_gap([t for t, _ in rig.chunks[first:]])


def test_a_swap_during_a_distillation_job(ros, recorded, tmp_path):
    from snapflow_interfaces.msg import ActionChunk, DistillationStatus
    from snapflow_interfaces.srv import StartDistillation
    from test_distillation_service import PolicyRig, _call, _job

    from snapflow_ros.bags.demo_bags import JOINTS as DEMO_JOINTS
    from snapflow_ros.ros.qos import COMMAND_QOS

    other = save_small_student(tmp_path / "other", 1, cameras=("front",), state_dim=len(DEMO_JOINTS),
                               action_dim=len(DEMO_JOINTS), chunk_size=6, width=32, num_heads=4, num_layers=1,
                               joint_names=tuple(DEMO_JOINTS))
    rig = PolicyRig(ros, recorded["teacher"], allowed_roots=[str(Path(recorded["teacher"]).parent), str(tmp_path)])
    rig.follow_status("/policy_node/distillation_status")
    arrivals: list[float] = []
    rig.probe.create_subscription(ActionChunk, "action_chunk", lambda m: arrivals.append(time.monotonic()),
                                  COMMAND_QOS)
    teacher_id, other_id = checkpoint_id(Path(recorded["teacher"])), checkpoint_id(other)
    assert ros.spin_until(lambda: len(rig.chunks) >= 2, 15.0)

    started = len(arrivals)
    response = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation",
                     StartDistillation.Request(job=_job(recorded, tmp_path / "student", steps=500)))
    assert response.accepted, response.message

    def progress() -> int:
        return max((s.step for s in rig.statuses if s.state == DistillationStatus.RUNNING), default=0)

    assert ros.spin_until(lambda: progress() > 0, 120.0)
    result = rig.node.set_parameters_atomically(_parameters(checkpoint=other))
    assert result.successful, result.reason
    assert ros.spin_until(lambda: rig.chunks[-1].policy_id == other_id, 30.0), rig.node.swap.last_error
    assert not any(s.state >= DistillationStatus.SUCCEEDED for s in rig.statuses)  # the job still ran
    swapped, step_when_swapped = len(rig.chunks), progress()

    assert ros.spin_until(lambda: any(s.state >= DistillationStatus.SUCCEEDED for s in rig.statuses), 180.0)
    done = next(s for s in rig.statuses if s.state >= DistillationStatus.SUCCEEDED)
    assert done.state == DistillationStatus.SUCCEEDED and done.job_id == response.job_id, done.message
    assert progress() > step_when_swapped and Path(done.student_checkpoint, "config.json").is_file()
    assert rig.node.counters["swaps"] == 1 and rig.node.counters["swap_failures"] == 0
    assert rig.node.get_parameter("checkpoint").value == str(other)
    ids = [c.policy_id for c in rig.chunks]
    assert set(ids) == {teacher_id, other_id} and set(ids[swapped:]) == {other_id}
    assert len(rig.chunks) - swapped >= 5  # chunks kept coming while the job trained, at their rate
    _assert_no_gap(arrivals[started:], JOB_MAX_GAP_S)
