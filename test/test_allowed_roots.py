"""allowed_roots: every path a ROS client can name (a swap's checkpoint; a job's bags, teacher,
dataset config and output directory, by service and by action) is resolved with symlinks followed
and refused with the reason when outside; the roots themselves cannot be changed at run time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import save_small_student
from snapflow_ros.allowed_roots import AllowedRoots, PathNotAllowedError
from snapflow_ros.bags.demo_bags import JOINTS

pytestmark = pytest.mark.ros


# --- the check itself -------------------------------------------------------------------------

def test_paths_resolve_before_the_check(tmp_path):
    inside, outside = tmp_path / "models", tmp_path / "elsewhere"
    (inside / "student").mkdir(parents=True)
    outside.mkdir()
    (inside / "link").symlink_to(outside, target_is_directory=True)
    roots = AllowedRoots.of([inside])
    assert roots.check(inside / "student", "checkpoint") == inside / "student"
    assert roots.check(inside, "checkpoint") == inside
    assert roots.check(inside / "not_yet" / "out", "output_dir") == inside / "not_yet" / "out"
    for sneaky in (inside / "link", inside / "link" / "student", inside / ".." / "elsewhere", outside):
        with pytest.raises(PathNotAllowedError, match="outside allowed_roots"):
            roots.check(sneaky, "checkpoint")
    # A prefix of the name is not a parent: /x/models2 is not under /x/models.
    with pytest.raises(PathNotAllowedError):
        roots.check(tmp_path / "models2", "checkpoint")
    with pytest.raises(PathNotAllowedError, match="set the 'allowed_roots' parameter"):
        AllowedRoots(()).check(inside, "bag_paths")


# --- the policy node's parameter --------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roots")
    (root / "models").mkdir()
    (root / "elsewhere").mkdir()
    return {"root": root, "a": save_small_student(root / "models" / "a", 0),
            "b": save_small_student(root / "models" / "b", 1),
            "outside": save_small_student(root / "elsewhere" / "c", 2)}


def _node(ros, **params):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.policy_node import PolicyNode

    values = {"joint_names": ["hand_x", "hand_y"], "instruction": "stack the blocks", "cameras": ["front"],
              "distillation": False} | params
    return ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def _set(node, name: str, value):
    from rclpy.parameter import Parameter

    return node.set_parameters([Parameter(name, value=value)])[0]


def test_swap_outside_the_roots_is_refused_and_the_policy_keeps_serving(ros, models):
    node = _node(ros, checkpoint=str(models["a"]))  # no allowed_roots: the checkpoint's directory
    serving = node.slot.policy.policy_id
    (models["root"] / "models" / "link").unlink(missing_ok=True)
    (models["root"] / "models" / "link").symlink_to(models["outside"], target_is_directory=True)
    for path in (models["outside"], models["root"] / "models" / "link", models["root"] / "models" / ".." /
                 "elsewhere" / "c"):
        result = _set(node, "checkpoint", str(path))
        assert not result.successful and "outside allowed_roots" in result.reason, result.reason
        assert node.get_parameter("checkpoint").value == str(models["a"])
    assert node.slot.policy.policy_id == serving
    assert _set(node, "checkpoint", str(models["b"])).successful  # beside the configured one: allowed
    assert ros.spin_until(lambda: node.slot.policy.policy_id != serving, 30.0)


def test_allowed_roots_cannot_be_changed_at_run_time(ros, models):
    node = _node(ros, checkpoint=str(models["a"]), allowed_roots=[str(models["root"] / "models")])
    result = _set(node, "allowed_roots", [str(models["root"])])
    assert not result.successful and "read-only" in result.reason
    assert not _set(node, "checkpoint", str(models["outside"])).successful


def test_unconfigured_node_refuses_a_checkpoint_outside_and_will_not_load_one(ros, models):
    node = _node(ros, autostart=False, allowed_roots=[str(models["root"] / "models")])
    result = _set(node, "checkpoint", str(models["outside"]))
    assert not result.successful and "outside allowed_roots" in result.reason
    assert _set(node, "checkpoint", str(models["b"])).successful
    node.trigger_configure()
    assert node.lifecycle_state == "inactive", node.configure_error  # configured from inside the roots


def test_configured_checkpoint_outside_the_given_roots_is_still_served(ros, models):
    """The operator's own parameter file names it: its directory joins the roots."""
    node = _node(ros, checkpoint=str(models["outside"]), allowed_roots=[str(models["root"] / "models")])
    assert node.slot.policy is not None and node.lifecycle_state == "active"
    assert _set(node, "checkpoint", str(models["a"])).successful


# --- distillation: service, action, standalone server -----------------------------------------

def _job(recorded: dict, output: Path, **fields):
    from snapflow_interfaces.msg import DistillationJob

    values = dict(bag_paths=recorded["bags"], teacher_checkpoint=recorded["teacher"], output_dir=str(output),
                  dataset_config=recorded["config"], steps=5, batch_size=4) | fields
    return DistillationJob(**values)


def _call(ros, node, service_type, name: str, request):
    client = node.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=10.0), name
    future = client.call_async(request)
    assert ros.spin_until(future.done, 10.0)
    return future.result()


@pytest.fixture
def places(recorded, tmp_path) -> dict[str, Path]:
    """Roots: the recorded bags/teacher and an outputs directory; outside: copies elsewhere."""
    recorded_root = Path(recorded["config"]).parent
    outside = tmp_path / "outside"
    shutil.copytree(Path(recorded["bags"][0]), outside / "bag")
    shutil.copytree(Path(recorded["teacher"]), outside / "teacher")
    shutil.copy(recorded["config"], outside / "bag_dataset.yaml")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "escape").symlink_to(outside, target_is_directory=True)
    return {"roots": [str(recorded_root), str(tmp_path / "outputs")], "outputs": tmp_path / "outputs",
            "outside": outside}


def _refusals(recorded, places) -> dict[str, dict]:
    """One job per entry of the message naming a path outside (field -> job fields)."""
    out = places["outputs"]
    return {
        "bag_paths": {"bag_paths": [recorded["bags"][0], str(places["outside"] / "bag")]},
        "teacher_checkpoint": {"teacher_checkpoint": str(places["outside"] / "teacher")},
        "dataset_config": {"dataset_config": str(places["outside"] / "bag_dataset.yaml")},
        "output_dir": {"output_dir": str(places["outside"] / "out")},
        "output_dir ": {"output_dir": str(out / "escape" / "out")},  # a symlink out of a root
    }


def test_policy_node_service_and_action_refuse_paths_outside(ros, recorded, places):
    from rclpy.action import ActionClient
    from rclpy.node import Node
    from snapflow_interfaces.action import Distill
    from snapflow_interfaces.srv import StartDistillation

    _node(ros, joint_names=list(JOINTS), allowed_roots=places["roots"], distillation=True)
    probe = ros.node(Node, "probe")
    actions = ActionClient(probe, Distill, "/policy_node/distill")
    assert actions.wait_for_server(timeout_sec=10.0)
    for field, fields in _refusals(recorded, places).items():
        output = places["outputs"] / f"job_{len(field)}"
        job = _job(recorded, output, **fields)
        response = _call(ros, probe, StartDistillation, "/policy_node/start_distillation",
                         StartDistillation.Request(job=job))
        assert not response.accepted and f"{field.strip()} " in response.message, response.message
        assert "outside allowed_roots" in response.message
        sent = actions.send_goal_async(Distill.Goal(job=job))
        assert ros.spin_until(sent.done, 10.0)
        result = sent.result().get_result_async()
        assert ros.spin_until(result.done, 10.0)
        assert not result.result().result.success
        assert "outside allowed_roots" in result.result().result.message
        assert not (places["outside"] / "out").exists() and not output.exists()  # nothing written
    actions.destroy()


def test_standalone_server_refuses_outside_and_everything_without_roots(ros, recorded, places):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from snapflow_interfaces.srv import StartDistillation

    from snapflow_ros.ros.distillation_server import DistillationServer

    server = ros.node(DistillationServer, parameter_overrides=[Parameter("allowed_roots", value=places["roots"])])
    probe = ros.node(Node, "probe")
    response = _call(ros, probe, StartDistillation, "/distillation_server/start_distillation",
                     StartDistillation.Request(job=_job(recorded, places["outside"] / "out")))
    assert not response.accepted and "output_dir" in response.message and "outside allowed_roots" in response.message
    assert not server.set_parameters([Parameter("allowed_roots", value=["/"])])[0].successful
    server.destroy_node()
    ros.nodes.remove(server)

    ros.node(DistillationServer)  # no roots: nothing is allowed, and it says what to set
    response = _call(ros, probe, StartDistillation, "/distillation_server/start_distillation",
                     StartDistillation.Request(job=_job(recorded, places["outputs"] / "a")))
    assert not response.accepted and "set the 'allowed_roots' parameter" in response.message


def test_a_job_inside_the_roots_runs_on_the_resolved_paths(ros, recorded, places):
    """A bag named through a link inside a root is accepted and read where the link pointed when checked."""
    from rclpy.node import Node
    from snapflow_interfaces.srv import StartDistillation

    node = _node(ros, joint_names=list(JOINTS), allowed_roots=places["roots"], distillation=True)
    link = places["outputs"] / "bag_link"
    os.symlink(recorded["bags"][1], link, target_is_directory=True)
    probe = ros.node(Node, "probe")
    response = _call(ros, probe, StartDistillation, "/policy_node/start_distillation",
                     StartDistillation.Request(job=_job(recorded, places["outputs"] / "run", bag_paths=[str(link)])))
    assert response.accepted, response.message
    job = node.distillation.queue.jobs[response.job_id]
    assert job.spec.bags == (str(Path(recorded["bags"][1]).resolve()),)
    job.cancel()
    assert job.finished.wait(30.0)
