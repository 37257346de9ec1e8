"""`snapflow export | validate | bench`: ONNX deployment of a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snapflow_ros.cli.options import write_json


def export(args: argparse.Namespace) -> int:
    from snapflow_ros.export.onnx_export import export_policy

    manifest = export_policy(args.checkpoint, args.output, steps=args.steps, opset=args.opset,
                             fp16=args.fp16, monolithic=tuple(args.monolithic))
    print(f"exported {manifest.family} ({manifest.precision}, {manifest.steps} steps) to {args.output}: "
          f"{', '.join(manifest.graphs.values())}")
    return 0


def validate(args: argparse.Namespace) -> int:
    from snapflow_ros.export.validate import validate_export

    report = validate_export(args.export, args.reference, args.threshold, args.seed, args.cases)
    write_json(report, args.json)
    for stage, values in report["stages"].items():
        print(f"{stage:12s} max_abs {values['max_abs']:.3e}  cosine {values['cosine']:.8f}", file=sys.stderr)
    verdict = "PASSED" if report["passed"] else f"FAILED (max_abs above {args.threshold:g})"
    print(f"validate: {verdict}", file=sys.stderr)
    return 0 if report["passed"] else 1


def bench(args: argparse.Namespace) -> int:
    from snapflow_ros.runtime.bench import bench_backends

    report = bench_backends(args.teacher, args.student, args.workdir, args.teacher_steps,
                            args.repeats, args.seed, args.ort_threads)
    write_json(report, args.json)
    for name, ratio in report["ratios_p50"].items():
        print(f"{name}: {ratio:.2f}", file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="decomposed ONNX export: prefix graph + expert graph + manifest",
                            description="Export a checkpoint (built-in, pi0, pi0.5, SmolVLA) as prefix.onnx "
                            "(observation -> per-layer K/V cache) and expert.onnx (x, t, s, cache -> velocity) "
                            "with torch.onnx.export(dynamo=True), check them with onnx.checker, and write "
                            "manifest.json and the weight-free processor. The directory is replaced atomically.")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--output", type=Path, required=True, help="export directory to write")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps recorded for the runtime (default: 1 for a SnapFlow student, else 10)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--fp16", action="store_true",
                   help="convert the graphs to float16 (inputs/outputs stay as they are)")
    p.add_argument("--monolithic", type=int, nargs="*", default=[],
                   help="also export single graphs running prefix + N steps, for each N given (benchmarks)")
    p.set_defaults(run=export)

    p = commands.add_parser("validate", help="parity of an export against its torch checkpoint",
                            description="Run the export (onnxruntime) and the torch reference on the same real-shaped "
                            "observations (--cases of them: other images, states and instructions of other lengths) "
                            "and fixed noise; report the worst max abs difference and cosine per stage (preprocess, "
                            "prefix, expert step, end to end). Exit code 1 when over --threshold. An FP16 export is "
                            "within about 1e-2 of its FP32 reference (README).")
    p.add_argument("export", type=Path, help="export directory (manifest.json, prefix.onnx, expert.onnx)")
    p.add_argument("--reference", type=Path, required=True, help="torch checkpoint to compare with")
    p.add_argument("--threshold", type=float, default=1e-4, help="largest allowed max abs difference (default: 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first observation and noise (default: 0)")
    p.add_argument("--cases", type=int, default=3, help="observations to compare, seeds SEED.. (default: 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    p.set_defaults(run=validate)

    p = commands.add_parser("bench", help="latency per backend: teacher@N vs student@1, decomposed vs monolithic",
                            description="Export teacher and student (reused when unchanged), then time end-to-end "
                            "sampling at batch 1 with torch and onnxruntime, teacher at N steps and student at 1, "
                            "decomposed and monolithic graphs, and the student with a committed prefix (rtc chunking), "
                            "interleaved in one run. Writes p50/p95/p99 and ratios.")
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint directory")
    p.add_argument("--student", type=Path, required=True, help="student checkpoint directory")
    p.add_argument("--teacher-steps", type=int, default=10, help="teacher denoising steps (default: 10)")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench"), help="exports go here (default: runs/bench)")
    p.add_argument("--json", type=Path, default=Path("runs/bench/report.json"),
                   help="report file (default: runs/bench/report.json)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the observation and noise (default: 0)")
    p.add_argument("--ort-threads", type=int, default=0,
                   help="onnxruntime intra-op threads; 0: its default (default: 0)")
    p.set_defaults(run=bench)
