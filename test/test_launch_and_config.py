"""launch/policy.launch.py and config/policy_node.yaml only name what the node declares.

The launch package is not installable here, so the launch file is checked as source (it
must parse, start an executable the package installs, and name only declared parameters and
launch arguments); the YAML file is loaded by a real node through --params-file.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from conftest import REPO

LAUNCH_FILE = REPO / "launch" / "policy.launch.py"
PARAMS_FILE = REPO / "config" / "policy_node.yaml"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _string_args(calls: list[ast.Call]) -> set[str]:
    return {c.args[0].value for c in calls if c.args and isinstance(c.args[0], ast.Constant)}


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def test_launch_file_defines_generate_launch_description(launch_tree):
    functions = {n.name for n in launch_tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_launch_configurations_are_declared_arguments(launch_tree):
    declared = _string_args(_calls(launch_tree, "DeclareLaunchArgument"))
    used = _string_args(_calls(launch_tree, "LaunchConfiguration"))
    assert {"params_file", "checkpoint", "namespace"} <= declared
    assert used and used <= declared, f"undeclared launch arguments: {used - declared}"


def test_launch_starts_an_installed_executable(launch_tree):
    (node_call,) = _calls(launch_tree, "Node")
    keywords = {k.arg: k.value for k in node_call.keywords}
    assert keywords["package"].value == "snapflow_ros"
    scripts = {ep.name for ep in entry_points(group="console_scripts") if ep.value.startswith("snapflow_ros.")}
    assert keywords["executable"].value in scripts


def _fresh_interpreter(code: str, ament_prefix_path: str | None) -> str:
    """stdout of `python -c code` started as a user would, AMENT_PREFIX_PATH set or not."""
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    if ament_prefix_path is not None:
        env["AMENT_PREFIX_PATH"] = ament_prefix_path
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_venv_prefix_comes_after_a_sourced_workspace_on_the_ament_path():
    show = "import os; print(os.environ['AMENT_PREFIX_PATH'])"
    assert _fresh_interpreter(show, "/some/ws").split(os.pathsep) == ["/some/ws", sys.prefix]
    assert _fresh_interpreter(show, None) == sys.prefix  # nothing sourced: the venv alone
    already = os.pathsep.join([sys.prefix, "/some/ws"])
    assert _fresh_interpreter(show, already) == already  # never twice, never reordered


def test_the_venv_prefix_has_the_executables_where_ros2_run_and_launch_look():
    # launch_ros and `ros2 run` take <package prefix>/lib/<package>/<executable>.
    code = "from ament_index_python.packages import get_package_prefix as p; print(p('snapflow_ros'))"
    prefix = Path(_fresh_interpreter(code, None))
    assert prefix == Path(sys.prefix)
    scripts = {ep.name for ep in entry_points(group="console_scripts") if ep.value.startswith("snapflow_ros.")}
    assert {"policy_node", "distillation_server", "sim_robot"} <= scripts
    for name in scripts:
        assert os.access(prefix / "lib" / "snapflow_ros" / name, os.X_OK), name
    result = subprocess.run([str(prefix / "lib" / "snapflow_ros" / "snapflow"), "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "snapflow_ros" in result.stdout, result.stderr


def test_launch_names_only_declared_parameters_and_topics(ros, launch_tree):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.policy_node import PolicyNode

    node = ros.node(PolicyNode, parameter_overrides=[Parameter("joint_names", value=["a"])])
    parameter_names = {
        key.value for d in ast.walk(launch_tree) if isinstance(d, ast.Dict)
        for key in d.keys if isinstance(key, ast.Constant)
    }
    assert parameter_names, "no parameter dict found in the launch file: update this test"
    assert all(node.has_parameter(name) for name in parameter_names), parameter_names

    (node_call,) = _calls(launch_tree, "Node")
    remappings = next(k.value for k in node_call.keywords if k.arg == "remappings")
    remapped = {t.elts[0].value for t in remappings.elts}
    topics = {name.split("/")[-1] for name, _ in node.get_topic_names_and_types()} | {
        s.topic_name.split("/")[-1] for s in node.subscriptions
    } | {p.topic_name.split("/")[-1] for p in node.publishers}
    assert remapped <= topics, f"remapped topics the node does not use: {remapped - topics}"


def test_params_file_keys_match_declared_parameters():
    """Every key is declared; every declared parameter is documented (set, or commented out)."""
    from snapflow_ros.ros.parameters import POLICY_NODE_PARAMETERS

    text = PARAMS_FILE.read_text()
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    declared = {spec.name for spec in POLICY_NODE_PARAMETERS}
    assert set(params) <= declared, set(params) - declared
    undocumented = [name for name in declared if f"{name}:" not in text]
    assert not undocumented


def test_node_loads_the_params_file(ros):
    """The YAML's values reach the node with the declared types (via --params-file)."""
    import rclpy

    from snapflow_ros.ros.policy_node import PolicyNode

    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(PARAMS_FILE)], context=context)
    try:
        node = PolicyNode(context=context)
        try:
            params = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]
            assert node.config.joint_names == tuple(params["joint_names"])
            assert node.config.chunk_rate_hz == params["chunk_rate_hz"]
            assert node.config.action_horizon == params["action_horizon"]
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


SERVER_LAUNCH = REPO / "launch" / "distillation_server.launch.py"
SERVER_PARAMS = REPO / "config" / "distillation_server.yaml"


def test_distillation_server_launch_and_params_name_what_it_declares(ros):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.distillation_server import DISTILLATION_SERVER_PARAMETERS, DistillationServer

    tree = ast.parse(SERVER_LAUNCH.read_text(), filename=str(SERVER_LAUNCH))
    declared_args = _string_args(_calls(tree, "DeclareLaunchArgument"))
    assert _string_args(_calls(tree, "LaunchConfiguration")) <= declared_args
    (node_call,) = _calls(tree, "Node")
    executable = next(k.value.value for k in node_call.keywords if k.arg == "executable")
    assert executable in {ep.name for ep in entry_points(group="console_scripts")}
    declared = {spec.name for spec in DISTILLATION_SERVER_PARAMETERS}
    launch_params = {key.value for d in ast.walk(tree) if isinstance(d, ast.Dict) for key in d.keys}
    assert launch_params <= declared
    params = yaml.safe_load(SERVER_PARAMS.read_text())["/**"]["ros__parameters"]
    assert set(params) == declared
    server = ros.node(DistillationServer, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    assert server.get_parameter("policy_node").value == params["policy_node"]


def test_documented_bag_dataset_config_loads():
    from snapflow_ros.bags.config import BagDatasetConfig

    config = BagDatasetConfig.from_yaml(REPO / "config" / "bag_dataset.yaml")
    assert config.cameras == {"front": "/camera/front/image_raw", "wrist": "/camera/wrist/compressed"}
    assert "/joint_commands" in config.topics() and len(config.joint_names) == 7


def test_sim_launch_and_params_name_what_the_nodes_declare(ros):
    from rclpy.parameter import Parameter

    from snapflow_ros.ros.policy_node import PolicyNode
    from snapflow_ros.ros.sim_robot import SIM_ROBOT_PARAMETERS

    path = REPO / "launch" / "sim.launch.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    assert _string_args(_calls(tree, "LaunchConfiguration")) <= _string_args(_calls(tree, "DeclareLaunchArgument"))
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    executables = {next(k.value.value for k in call.keywords if k.arg == "executable") for call in _calls(tree, "Node")}
    assert executables == {"sim_robot", "policy_node"} and executables <= scripts
    params = yaml.safe_load((REPO / "config" / "sim_robot.yaml").read_text())
    assert set(params["sim_robot"]["ros__parameters"]) == {spec.name for spec in SIM_ROBOT_PARAMETERS}
    node_params = params["policy_node"]["ros__parameters"]
    node = ros.node(PolicyNode, parameter_overrides=[Parameter(k, value=v) for k, v in node_params.items()])
    assert node.config.cameras == ("top",) and node.config.watermark == 0.9
