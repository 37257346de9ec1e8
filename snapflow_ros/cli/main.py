"""`snapflow <command>`: the entry point of snapflow_ros without `ros2 run`.

ROS-side commands import rclpy only when run, so `snapflow --help` works on machines that
only distil. A command that fails exits 2 with one line on stderr saying why (--debug, or
SNAPFLOW_DEBUG=1, shows the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from snapflow_ros import __version__
from snapflow_ros.errors import SnapflowError

# What a command raises for bad input or a failed run, as opposed to a bug: reported in one line.
# Besides our own errors: what torch, safetensors, numpy and the OS raise for a corrupt file, a
# full disk, an exhausted GPU or a diverged loss (FloatingPointError).
REPORTED_ERRORS = (SnapflowError, ValueError, RuntimeError, FloatingPointError, OSError)
INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a Ctrl-C'd command


def _node(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.policy_node import main as policy_node_main

    policy_node_main(["policy_node", *args.ros_args])
    return 0


def _demo(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.demo import run_demo

    return run_demo(num_chunks=args.chunks, timeout_s=args.timeout, params_file=args.params_file)


def _bench_node(args: argparse.Namespace) -> int:
    from snapflow_ros.cli.options import write_json
    from snapflow_ros.ros.node_bench import bench_node

    checkpoint = args.checkpoint or _bench_node_policy(args)
    report = bench_node(checkpoint, args.joint_names, args.cameras, args.seconds, args.chunk_rate_hz,
                        args.camera_hz, args.image_size, args.watermark, args.action_dt)
    write_json(report, args.json)
    return 0


def _soak(args: argparse.Namespace) -> int:
    from snapflow_ros.cli.options import write_json
    from snapflow_ros.ros.soak import SoakConfig, run_soak
    from snapflow_ros.runtime.soak_report import write_soak_plot

    report = run_soak(SoakConfig(workdir=args.workdir, minutes=args.minutes, swap_every_s=args.swap_every,
                                 job_every_s=args.job_every, job_steps=args.job_steps,
                                 hold_every_s=args.hold_every, hold_for_s=args.hold_for,
                                 warmup_minutes=args.warmup_minutes))
    write_json(report, args.workdir / "report.json")
    write_soak_plot(report, args.workdir / "report.svg")
    failed = [name for name, ok in report["checks"].items() if ok is False]
    print(f"soak: {'FAILED ' + ', '.join(failed) if failed else 'passed'}", file=sys.stderr)
    return 1 if failed else 0


def _bench_node_policy(args: argparse.Namespace) -> Path:
    """A built-in VLA shaped for the benchmark (its cameras and joints), one-step like a student;
    latency does not depend on what the weights learned."""
    import torch

    from snapflow_ros.families.builtin import BuiltinVLA, BuiltinVLAConfig
    from snapflow_ros.files import save_policy

    torch.manual_seed(0)
    n = len(args.joint_names)
    policy = BuiltinVLA(BuiltinVLAConfig(cameras=tuple(args.cameras), state_dim=n, action_dim=n, chunk_size=10,
                                         joint_names=tuple(args.joint_names)))
    with torch.no_grad():
        policy.target_time.linear_out.weight.normal_(0, 0.1)
    return save_policy(policy, args.json.parent / "policy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapflow", description="One-step flow-matching policies for ROS 2 (SnapFlow)."
    )
    parser.add_argument("--version", action="version", version=f"snapflow_ros {__version__}")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("SNAPFLOW_DEBUG") == "1",
                        help="let a failure raise with its traceback instead of the one-line reason "
                        "(also: SNAPFLOW_DEBUG=1)")
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

    bench = commands.add_parser(
        "bench-node", help="benchmark the node: overhead over inference, sustained 30 Hz cameras",
        description="Run policy_node on CHECKPOINT, event-driven (--watermark), with fake cameras and joint "
        "states in another process (isolated localhost domain) and report the node's overhead (arrival of "
        "an observation's last input -> chunk published, minus inference, measured in the node), "
        "observation->chunk latency, chunk rate, frame rate and memory over the run, as JSON.")
    bench.add_argument("checkpoint", type=Path, nargs="?", default=None,
                       help="checkpoint the node serves (cameras and joints must match the flags); default: "
                       "a built-in VLA made for them next to --json")
    bench.add_argument("--joint-names", nargs="+", default=["j1", "j2", "j3", "j4", "j5", "j6", "gripper"],
                       help="joints of the policy's actions, in order (default: j1..j6 gripper)")
    bench.add_argument("--cameras", nargs="+", default=["front", "left", "right"], help="camera names (default: 3)")
    bench.add_argument("--seconds", type=float, default=30.0, help="measured duration (default: 30)")
    bench.add_argument("--chunk-rate-hz", type=float, default=2.0,
                       help="node chunk timer, a fallback with a watermark (default: 2)")
    bench.add_argument("--watermark", type=float, default=0.5,
                       help="a chunk once this share of the previous one has executed, as soon as the inputs of "
                       "one moment are in; 0: on the timer only (default: 0.5)")
    bench.add_argument("--action-dt", type=float, default=1 / 30,
                       help="seconds per action (default: 1/30; 10-action chunks then start every 1/6 s)")
    bench.add_argument("--camera-hz", type=float, default=30.0, help="rate of each fake camera (default: 30)")
    bench.add_argument("--image-size", type=int, default=96, help="fake camera image side in pixels (default: 96)")
    bench.add_argument("--json", type=Path, default=Path("runs/bench-node/report.json"),
                       help="report file (default: runs/bench-node/report.json)")
    bench.set_defaults(run=_bench_node)

    soak = commands.add_parser(
        "soak", help="the node left running with swaps, jobs and holds: missed chunks, latency, memory, fds",
        description="Run policy_node (its own process, isolated localhost domain) serving a built-in one-step "
        "student, with three cameras at 30 Hz and joint states at 100 Hz, a hot swap every --swap-every s "
        "alternating two students, a distillation job from bags every --job-every s and the hold service "
        "toggled; report chunks expected vs published outside holds, the longest gap, latency p50/p99 per "
        "minute, the node's RSS and open file descriptors per minute with their slopes, every swap and job, "
        "and any error, as JSON plus an SVG plot. Exit code 1 when a check fails.")
    soak.add_argument("--minutes", type=float, default=60.0, help="measured duration (default: 60)")
    soak.add_argument("--workdir", type=Path, default=Path("runs/soak"),
                      help="students, bags, job outputs, node log, report.json and report.svg (default: runs/soak)")
    soak.add_argument("--swap-every", type=float, default=30.0, help="seconds between hot swaps (default: 30)")
    soak.add_argument("--job-every", type=float, default=300.0,
                      help="seconds between distillation jobs, the first at 20 s (default: 300)")
    soak.add_argument("--job-steps", type=int, default=200, help="training steps per job (default: 200)")
    soak.add_argument("--hold-every", type=float, default=60.0, help="seconds between holds (default: 60)")
    soak.add_argument("--hold-for", type=float, default=3.0, help="seconds each hold lasts (default: 3)")
    soak.add_argument("--warmup-minutes", type=float, default=5.0,
                      help="minutes before the RSS and fd slopes count (at most half the run; default: 5)")
    soak.set_defaults(run=_soak)

    from snapflow_ros.cli import ablation, bags, deploy, lerobot, sim, training

    for module in (training, ablation, bags, lerobot, deploy, sim):
        module.add_commands(commands)
    return parser


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def _terminate(signum, frame) -> None:
    # SIGTERM (a cancelled job, a stopped service) unwinds like Ctrl-C: temporary checkpoint
    # directories are removed and nothing half-written is left behind.
    raise SystemExit(128 + signum)


def one_line_reason(error: BaseException) -> str:
    """The error's message on one line; a non-snapflow error is prefixed with its type, as its
    message alone may not say what went wrong (e.g. a bare path for FileNotFoundError)."""
    text = " ".join(str(error).split()) or repr(error)
    return text if isinstance(error, SnapflowError) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        result = args.run(args)
    except REPORTED_ERRORS as error:
        if args.debug:
            raise
        print(f"snapflow {args.command}: error: {one_line_reason(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"snapflow {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    return result if isinstance(result, int) else 0  # commands return an exit code or a result


if __name__ == "__main__":
    sys.exit(main())
