"""`snapflow <command>`: the entry point of snapflow_ros without `ros2 run`.

ROS-side commands import rclpy only when run, so `snapflow --help` works on machines that
only distil.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snapflow_ros import __version__
from snapflow_ros.errors import SnapflowError


def _node(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.policy_node import main as policy_node_main

    policy_node_main(["policy_node", *args.ros_args])
    return 0


def _demo(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.demo import run_demo

    return run_demo(num_chunks=args.chunks, timeout_s=args.timeout, params_file=args.params_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapflow", description="One-step flow-matching policies for ROS 2 (SnapFlow)."
    )
    parser.add_argument("--version", action="version", version=f"snapflow_ros {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = commands.add_parser(
        "node", help="run the policy node (same as the policy_node executable)",
        description="Run policy_node. Arguments after 'node' go to ROS, e.g. "
        "snapflow node --ros-args --params-file config/policy_node.yaml",
    )
    node.add_argument("ros_args", nargs=argparse.REMAINDER, help="ROS arguments (--ros-args ...)")
    node.set_defaults(run=_node)

    demo = commands.add_parser(
        "demo", help="bring-up demo: policy node + fake robot, prints published chunks",
        description="Start policy_node in its own process on an isolated localhost DDS domain, "
        "feed it a fake robot's joint states and print the action chunks it publishes.",
    )
    demo.add_argument("--chunks", type=int, default=10,
                      help="stop after this many chunks have been received (default: 10)")
    demo.add_argument("--timeout", type=float, default=60.0,
                      help="give up after this many seconds (default: 60)")
    demo.add_argument("--params-file", type=_existing_file, default=None,
                      help="policy_node parameters (default: the installed config/policy_node.yaml)")
    demo.set_defaults(run=_demo)

    from snapflow_ros.cli import deploy, lerobot, training

    for module in (training, lerobot, deploy):
        module.add_commands(commands)
    return parser


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except SnapflowError as error:
        print(f"snapflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0  # commands return an exit code or a result


if __name__ == "__main__":
    sys.exit(main())
