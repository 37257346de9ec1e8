"""Distillation over ROS 2 (real rclpy, isolated domain): bags -> service -> job in its own process
-> status topic -> the policy node swaps to the student -> chunks carry its id; the standalone
server's action with feedback, cancel and swap of a remote node; bad input in the job status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from snapflow_ros.bags.demo_bags import JOINTS
from snapflow_ros.data.synthetic_reach import INSTRUCTION
from snapflow_ros.files import checkpoint_id

pytestmark = pytest.mark.ros



def _job(recorded: dict, output: Path, **fields):
    from snapflow_interfaces.msg import DistillationJob

    values = dict(bag_paths=recorded["bags"], teacher_checkpoint=recorded["teacher"], output_dir=str(output),
                  dataset_config=recorded["config"], steps=20, batch_size=8) | fields
    return DistillationJob(**values)


class PolicyRig:
    """policy_node serving the teacher, fed by a fake camera and joint states; records chunks."""

    def __init__(self, ros, teacher: str, allowed_roots: list[str], **params) -> None:
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from snapflow_interfaces.msg import ActionChunk

        from snapflow_ros.ros.fake_sensors import FakeCameraPublisher, FakeJointStatePublisher
        from snapflow_ros.ros.policy_node import PolicyNode
        from snapflow_ros.ros.qos import COMMAND_QOS

        values = {"checkpoint": teacher, "joint_names": list(JOINTS), "cameras": ["front"], "instruction": INSTRUCTION,
                  "chunk_rate_hz": 10.0, "drop_stale_actions": False, "allowed_roots": allowed_roots, **params}
        self.node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        ros.node(FakeJointStatePublisher, list(JOINTS))
        ros.node(FakeCameraPublisher, "camera/front/image_raw")
        self.probe = ros.node(Node, "probe")
        self.chunks: list = []
        self.statuses: list = []
        self.probe.create_subscription(ActionChunk, "action_chunk", self.chunks.append, COMMAND_QOS)

    def follow_status(self, topic: str) -> None:
        from snapflow_interfaces.msg import DistillationStatus

        from snapflow_ros.ros.distillation import STATUS_QOS

        self.probe.create_subscription(DistillationStatus, topic, self.statuses.append, STATUS_QOS)


def _call(ros, node, service_type, name: str, request, timeout_s: float = 10.0):
    client = node.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=timeout_s), name
    future = client.call_async(request)
    assert ros.spin_until(future.done, timeout_s)
    return future.result()


@pytest.mark.slow
def test_service_job_to_student_to_hot_swap(ros, recorded, tmp_path, tmp_root):
    from snapflow_interfaces.msg import DistillationStatus
    from snapflow_interfaces.srv import GetDistillationStatus, StartDistillation

    rig = PolicyRig(ros, recorded["teacher"], [tmp_root])
    rig.follow_status("/policy_node/distillation_status")
    teacher_id = checkpoint_id(Path(recorded["teacher"]))
    assert ros.spin_until(lambda: len(rig.chunks) >= 2, 15.0)
    assert rig.chunks[-1].policy_id == teacher_id

    started = time.monotonic()
    # No dataset_config: the bags are read by the node's own topic mapping (actions: next states).
    job = _job(recorded, tmp_path / "student", swap_when_done=True, dataset_config="")
    response = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation",
                     StartDistillation.Request(job=job))
    assert response.accepted, response.message
    assert time.monotonic() - started < 5.0  # the id comes back at once; training runs elsewhere
    derived = (tmp_path / "student" / "bag_dataset.yaml").read_text()
    assert "/camera/front/image_raw" in derived and "next_state" in derived

    assert ros.spin_until(lambda: any(s.state == DistillationStatus.SUCCEEDED for s in rig.statuses), 180.0)
    running = [s for s in rig.statuses if s.state == DistillationStatus.RUNNING and s.step > 0]
    assert running and running[-1].total_steps == 20 and running[-1].steps_per_second > 0
    assert running[-1].eta_seconds >= 0
    done = next(s for s in rig.statuses if s.state == DistillationStatus.SUCCEEDED)
    assert done.job_id == response.job_id and done.student_checkpoint == str(tmp_path / "student" / "policy")
    assert "swap requested" in done.message
    # The node kept publishing while the job trained.
    assert sum(1 for c in rig.chunks if c.policy_id == teacher_id) >= 5

    student_id = checkpoint_id(Path(done.student_checkpoint))
    assert ros.spin_until(lambda: rig.chunks[-1].policy_id == student_id, 30.0)
    assert rig.node.get_parameter("checkpoint").value == done.student_checkpoint
    status = _call(ros, rig.probe, GetDistillationStatus, "/policy_node/get_distillation_status",
                   GetDistillationStatus.Request(job_id=response.job_id))
    assert status.found and status.status.state == DistillationStatus.SUCCEEDED


def test_bad_bags_fail_the_job_with_bag_and_topic_named(ros, recorded, tmp_path, tmp_root):
    from snapflow_interfaces.msg import DistillationStatus
    from snapflow_interfaces.srv import GetDistillationStatus, StartDistillation

    rig = PolicyRig(ros, recorded["teacher"], [tmp_root])
    config = tmp_path / "elbow.yaml"
    recorded["spec"].dataset_config(joint_names=("hand_x", "elbow")).write_yaml(config)
    request = StartDistillation.Request(job=_job(recorded, tmp_path / "a", dataset_config=str(config)))
    response = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation", request)
    assert response.accepted, response.message

    def finished():
        result = _call(ros, rig.probe, GetDistillationStatus, "/policy_node/get_distillation_status",
                       GetDistillationStatus.Request(job_id=response.job_id))
        return result.status if result.status.state >= DistillationStatus.SUCCEEDED else None

    deadline, status = time.monotonic() + 120.0, None
    while status is None and time.monotonic() < deadline:
        status = finished()
        ros.spin_for(0.2)
    assert status is not None and status.state == DistillationStatus.FAILED
    assert f"bag {recorded['bags'][0]}: topic /joint_states: joints ['elbow'] missing from 'name'" in status.message

    refused = _call(ros, rig.probe, StartDistillation, "/policy_node/start_distillation",
                    StartDistillation.Request(job=_job(recorded, tmp_path / "b", teacher_checkpoint=str(tmp_path))))
    assert not refused.accepted and "config.json missing" in refused.message


@pytest.mark.slow
def test_standalone_server_action_feedback_cancel_and_remote_swap(ros, recorded, tmp_path, tmp_root):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter
    from snapflow_interfaces.action import Distill

    from snapflow_ros.ros.distillation_server import DistillationServer

    rig = PolicyRig(ros, recorded["teacher"], [tmp_root], distillation=False)
    ros.node(DistillationServer, parameter_overrides=[Parameter("policy_node", value="/policy_node"),
                                                      Parameter("allowed_roots", value=[tmp_root])])
    client = ActionClient(rig.probe, Distill, "/distillation_server/distill")
    assert client.wait_for_server(timeout_sec=10.0)

    # A long job, cancelled once it reports progress.
    feedback: list = []
    sent = client.send_goal_async(Distill.Goal(job=_job(recorded, tmp_path / "cancelled", steps=100_000)),
                                  feedback_callback=lambda f: feedback.append(f.feedback.status))
    assert ros.spin_until(sent.done, 10.0) and sent.result().accepted
    assert ros.spin_until(lambda: any(s.step > 0 for s in feedback), 120.0)
    cancel = sent.result().cancel_goal_async()
    assert ros.spin_until(cancel.done, 10.0)
    result = sent.result().get_result_async()
    assert ros.spin_until(result.done, 30.0)
    assert result.result().status == GoalStatus.STATUS_CANCELED and not result.result().result.success
    assert not (tmp_path / "cancelled" / "policy").exists()

    # A short job that swaps the student into the policy node through its parameter service.
    feedback.clear()
    sent = client.send_goal_async(Distill.Goal(job=_job(recorded, tmp_path / "student", swap_when_done=True)),
                                  feedback_callback=lambda f: feedback.append(f.feedback.status))
    assert ros.spin_until(sent.done, 10.0) and sent.result().accepted
    result = sent.result().get_result_async()
    assert ros.spin_until(result.done, 180.0)
    outcome = result.result().result
    assert result.result().status == GoalStatus.STATUS_SUCCEEDED and outcome.success, outcome.message
    assert outcome.student_checkpoint == str(tmp_path / "student" / "policy")
    assert [s.step for s in feedback if s.step][-1] == 20
    student_id = checkpoint_id(Path(outcome.student_checkpoint))
    assert ros.spin_until(lambda: rig.chunks and rig.chunks[-1].policy_id == student_id, 30.0)
