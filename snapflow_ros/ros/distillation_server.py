"""distillation_server: SnapFlow distillation over ROS 2 without a policy node in the process
(a training machine beside the robot, or a robot whose policy node runs elsewhere).

Same services, action and status topic as the policy node's (ros/distillation.py). A finished
job with swap_when_done sets the 'checkpoint' parameter of the node named by 'policy_node'
through its parameter service, so that node's checked hot swap does the loading.
"""

from __future__ import annotations

from pathlib import Path

from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter

from snapflow_ros.allowed_roots import AllowedRoots
from snapflow_ros.bags.config import BagDatasetConfig
from snapflow_ros.ros.distillation import DistillationService
from snapflow_ros.ros.parameters import ParameterSpec, declare_parameters, string_array
from snapflow_ros.ros.spin import spin_node

DISTILLATION_SERVER_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "policy_node", Parameter.Type.STRING, "",
        "Fully qualified name of the policy node whose 'checkpoint' a finished job with swap_when_done "
        "sets (e.g. /robot/policy_node); empty: such jobs are refused.",
    ),
    ParameterSpec(
        "dataset_config", Parameter.Type.STRING, "",
        "Bag dataset YAML used by jobs that name none (see config/bag_dataset.yaml); empty: jobs must name one.",
    ),
    ParameterSpec(
        "allowed_roots", Parameter.Type.STRING_ARRAY, [],
        "Directories jobs may read bags, teachers and dataset configs from and write outputs into "
        "(symlinks followed); a job naming a path outside them is refused with the reason. Empty: "
        "every job is refused.", read_only=True,
    ),
    ParameterSpec("job_niceness", Parameter.Type.INTEGER, 10,
                  "CPU niceness of job processes.", range=(0, 19), read_only=True),
    ParameterSpec("job_threads", Parameter.Type.INTEGER, 0,
                  "Torch threads of a job process; 0: torch's default.", range=(0, 256), read_only=True),
)


class DistillationServer(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("distillation_server", **kwargs)
        declare_parameters(self, DISTILLATION_SERVER_PARAMETERS)
        self.service = DistillationService(self, self._default_dataset, self._swap,
                                           AllowedRoots.of(string_array(self, "allowed_roots")),
                                           self.get_parameter("job_niceness").value,
                                           self.get_parameter("job_threads").value)
        self.get_logger().info("ready: ~/start_distillation, ~/distill")

    def _default_dataset(self) -> BagDatasetConfig | None:
        path = self.get_parameter("dataset_config").value
        return BagDatasetConfig.from_yaml(Path(path)) if path else None

    def _swap(self, job_id: str, student: str) -> str:
        target = self.get_parameter("policy_node").value
        if not target:
            return "not swapped: parameter 'policy_node' is empty"
        client = self.create_client(SetParameters, f"{target.rstrip('/')}/set_parameters")
        if not client.wait_for_service(timeout_sec=5.0):
            self.destroy_client(client)
            return f"not swapped: {target} offers no parameter service"
        request = SetParameters.Request(parameters=[Parameter("checkpoint", value=student).to_parameter_msg()])

        def answered(future) -> None:
            result = future.result().results[0] if future.result() else None
            if result is not None and result.successful:
                self.service.note(job_id, f"{target} accepted the student: loading beside its serving policy")
            else:
                self.service.note(job_id, f"{target} refused the student: {result.reason if result else 'no answer'}")
            self.destroy_client(client)

        client.call_async(request).add_done_callback(answered)
        return f"swap requested on {target}"

    def destroy_node(self) -> None:
        if hasattr(self, "service"):
            self.service.shutdown()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node("distillation_server", DistillationServer, args)


if __name__ == "__main__":
    main()
