"""Driver of scripts/gpu_check.sh: runs its steps, times them, samples GPU memory, and keeps one
report (gpu_table.json + gpu_table.md) up to date after every step, so that a run cut short by
its budget still leaves a valid partial table.

    python -m snapflow_ros.runtime.gpu_check step --report R --family F --step S --log-dir D \\
        --deadline EPOCH [--result FILE --key KEY] -- COMMAND...
    python -m snapflow_ros.runtime.gpu_check skip --report R --family F --step S --reason TEXT
    python -m snapflow_ros.runtime.gpu_check env --report R       (versions, GPU, providers)
    python -m snapflow_ros.runtime.gpu_check providers            (usable onnxruntime providers)
    python -m snapflow_ros.runtime.gpu_check ort-bench EXPORT --provider cuda --json FILE
    python -m snapflow_ros.runtime.gpu_check finish --report R

The step runner imports nothing but the standard library: it runs before the environment is set
up, under any Python 3.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

# Provider chains per --provider: unsupported nodes fall through to the next (TensorRT -> CUDA ->
# CPU), as onnxruntime does for subgraphs TensorRT cannot take.
PROVIDER_CHAINS = {
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
}
LATENCY_KEYS = ("prefix", "expert_step", "end_to_end_10_steps", "end_to_end_1_steps")
MIN_STEP_S = 15.0   # a step is not started with less budget left than this
TAIL_LINES = 40     # lines of each step's output kept in the summary log


# --- the report ---------------------------------------------------------------------------------

def read_report(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": False, "config": {},
            "environment": {}, "steps": [], "families": {}}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """gpu_table.json and gpu_table.md, each replaced atomically (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((path, json.dumps(report, indent=2) + "\n"),
                         (path.with_suffix(".md"), render_markdown(report))):
        partial = target.with_name(target.name + ".partial")
        partial.write_text(text)
        partial.replace(target)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _load_result(path: Path) -> Any:
    """A JSON file, or the last row of a JSON-lines file (a trainer's metrics)."""
    text = path.read_text().strip()
    if path.suffix == ".jsonl":
        return json.loads(text.splitlines()[-1]) if text else {}
    return json.loads(text)


def record_step(report_path: Path, entry: dict[str, Any], result: tuple[str, Any] | None = None) -> None:
    report = read_report(report_path)
    report["steps"] = [s for s in report["steps"] if s["name"] != entry["name"]] + [entry]
    if result is not None:
        _set(report["families"].setdefault(entry["family"], {}), *result)
    write_report(report_path, report)


# --- running one step ----------------------------------------------------------------------------

class GpuMemorySampler:
    """Peak of nvidia-smi's memory.used (MiB, the whole GPU) while a step runs; None without it."""

    def __init__(self, gpu: int, interval_s: float = 0.5) -> None:
        self.gpu, self.interval_s = gpu, interval_s
        self.available = shutil.which("nvidia-smi") is not None
        self.before = self.read() if self.available else None
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> int | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", str(self.gpu)], capture_output=True, text=True, timeout=10)
            return int(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            value = self.read()
            if value is not None:
                self.peak = max(self.peak or 0, value)

    def __enter__(self) -> GpuMemorySampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def _tail(log: Path) -> list[str]:
    # The LeRobot loaders repeat one WARNING per weight; the lines that say what happened are others.
    with log.open(errors="replace") as f:
        return list(deque((line.rstrip("\n") for line in f if not line.startswith("WARNING:")), TAIL_LINES))


def run_step(report_path: Path, family: str, step: str, command: list[str], log_dir: Path, deadline: float,
             result: Path | None = None, key: str | None = None, gpu: int = 0,
             min_step_s: float = MIN_STEP_S) -> int:
    """Run `command` until it ends or the budget does; record it; 0 when it succeeded, 124 when
    stopped at the deadline, 75 when too little budget was left to start it."""
    name = f"{family}/{step}"
    entry: dict[str, Any] = {"name": name, "family": family, "step": step, "command": command}
    remaining = deadline - time.time()
    if remaining < min_step_s:
        entry |= {"status": "skipped", "reason": f"budget: {remaining:.0f} s left"}
        record_step(report_path, entry)
        print(f"gpu_check: {name} skipped ({entry['reason']})", flush=True)
        return 75
    if result is not None:
        result.unlink(missing_ok=True)  # never attach a stale file from an earlier run
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{family}-{step}.log"
    print(f"gpu_check: {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with GpuMemorySampler(gpu) as memory, log.open("w") as out:
        # Its own process group, so that a step past the budget is stopped with all its workers.
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = process.wait(timeout=remaining)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            rc, status = 124, "timeout"
    seconds = time.perf_counter() - started
    entry |= {"status": status, "rc": rc, "seconds": round(seconds, 2),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
              "gpu_memory_before_mib": memory.before, "gpu_memory_peak_mib": memory.peak, "log": str(log)}
    tail = _tail(log)
    if status != "ok":
        entry["tail"] = tail[-12:]
    attached = None
    if result is not None and key is not None and result.is_file():
        attached = (key, _load_result(result))
    record_step(report_path, entry, attached)
    with report_path.with_name("gpu_check.log").open("a") as summary:
        summary.write(f"== {name}: {status} (rc {rc}, {seconds:.1f} s) {' '.join(command)}\n")
        summary.write("\n".join(tail) + "\n")
    gpu_note = f", GPU peak {memory.peak} MiB" if memory.peak is not None else ""
    print(f"gpu_check: {name} {status} in {seconds:.1f} s{gpu_note}", flush=True)
    if status != "ok":
        print("\n".join(tail), file=sys.stderr, flush=True)
    return 0 if status == "ok" else (rc or 1)


def record_skip(report_path: Path, family: str, step: str, reason: str) -> None:
    record_step(report_path, {"name": f"{family}/{step}", "family": family, "step": step,
                              "status": "skipped", "reason": reason})
    print(f"gpu_check: {family}/{step} skipped ({reason})", flush=True)


# --- what runs inside the set-up environment -------------------------------------------------------

def environment() -> dict[str, Any]:
    """Versions, the GPU, and what onnxruntime can run here."""
    import importlib.metadata as metadata
    import platform

    import torch

    from snapflow_ros.runtime.backends import usable_providers

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "compute_capability": f"{props.major}.{props.minor}"}
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip()
    import onnxruntime as ort

    info |= {"onnxruntime_device": ort.get_device(), "onnxruntime_available": ort.get_available_providers(),
             "onnxruntime_usable": usable_providers(ort.get_available_providers())}
    packages = ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "lerobot", "transformers", "numpy")
    info["packages"] = {}
    for package in packages:
        try:
            info["packages"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info["packages"][package] = None
    return info


def ort_latency(export_dir: Path, provider: str, repeats: int, warmup: int, device_id: int = 0) -> dict[str, Any]:
    """Batch-1 latency of the onnxruntime backend with IO binding, with bench-lerobot's fields."""
    import torch

    from snapflow_ros.errors import ConfigError
    from snapflow_ros.runtime.backends import OnnxRuntimeBackend
    from snapflow_ros.runtime.timing import measure_interleaved

    if provider not in PROVIDER_CHAINS:
        raise ConfigError(f"--provider {provider!r}: expected one of {sorted(PROVIDER_CHAINS)}")
    started = time.perf_counter()
    # Explicit providers: the backend refuses to fall back silently (a CPU number in a GPU row).
    backend = OnnxRuntimeBackend(export_dir, providers=PROVIDER_CHAINS[provider], device_id=device_id)
    session_seconds = time.perf_counter() - started  # TensorRT builds (or loads) its engines here
    batch = backend.processor.example_batch(1, seed=0)
    noise = torch.randn(1, backend.chunk_size, backend.noise_dim, generator=torch.Generator().manual_seed(0))
    cache = backend.prefix(backend.prepare(batch))
    cache_device = cache[0].device_name().lower()
    if cache_device != backend.device_type:
        raise ConfigError(f"the prefix cache is on {cache_device}, expected {backend.device_type}")
    # run_with_iobinding returns once the providers have synchronised (onnxruntime's default), so
    # each call's wall time includes its GPU work.
    timing: dict[str, Any] = measure_interleaved({
        "prefix": lambda: backend.prefix(backend.prepare(batch)),
        "expert_step": lambda: backend.step(noise, torch.ones(1), torch.zeros(1), cache),
        "end_to_end_10_steps": lambda: backend.sample(batch, noise, 10),
        "end_to_end_1_steps": lambda: backend.sample(batch, noise, 1),
    }, repeats, warmup=warmup)
    p50 = {name: timing[name]["p50"] for name in LATENCY_KEYS}
    timing["ratio_end_to_end_10_over_1"] = p50["end_to_end_10_steps"] / p50["end_to_end_1_steps"]
    timing["end_to_end_1_over_prefix_plus_step"] = p50["end_to_end_1_steps"] / (p50["prefix"] + p50["expert_step"])
    return {"backend": "onnxruntime", "provider": provider, "providers": backend.providers,
            "device_id": device_id, "cache_device": cache_device, "precision": backend.manifest.precision,
            "family": backend.manifest.family, "batch_size": 1, "repeats": repeats, "warmup": warmup,
            "session_start_seconds": session_seconds, **timing}


# --- the Markdown table ------------------------------------------------------------------------------

def _ms(stats: dict[str, float] | None) -> str:
    return f"{stats['p50']:.2f} ({stats['p95']:.2f})" if stats and "p50" in stats else "-"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def latency_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per family and backend: torch (bench-lerobot) and each onnxruntime provider."""
    rows = []
    for family, results in report.get("families", {}).items():
        torch_report = results.get("torch", {})
        torch_row = torch_report.get("families", {}).get(family)
        if torch_row:
            rows.append(torch_row | {"family": family, "backend": f"torch ({torch_report.get('device', '?')}, "
                                     f"{torch_report.get('dtype', 'float32')})"})
        for provider, row in results.get("onnxruntime", {}).items():
            rows.append(row | {"family": family, "backend": f"onnxruntime {provider} ({row.get('precision', '?')})"})
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    config, env = report.get("config", {}), report.get("environment", {})
    lines = [f"# GPU check: {env.get('gpu', env.get('nvidia_smi', 'no GPU'))}",
             "",
             f"size {config.get('size', '?')}, dtype {config.get('dtype', '?')}, device {config.get('device', '?')}; "
             f"torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda')}), onnxruntime "
             f"{env.get('packages', {}).get('onnxruntime-gpu') or env.get('packages', {}).get('onnxruntime', '?')} "
             f"usable providers {env.get('onnxruntime_usable', '?')}; started {report.get('started')}"
             f"{'' if report.get('finished') else ' (partial: still running or cut short)'}",
             "",
             "## Latency at batch 1, ms: p50 (p95)",
             "",
             "| family | backend | prefix | expert step | 10 steps | 1 step | 10/1 |",
             "|---|---|---|---|---|---|---|"]
    for row in latency_rows(report):
        ratio = row.get("ratio_end_to_end_10_over_1")
        cells = [row["family"], row["backend"], *(_ms(row.get(k)) for k in LATENCY_KEYS),
                 f"{ratio:.2f}" if ratio else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Parity of the export (snapflow validate)", "",
              "| family | passed | end-to-end max abs | threshold | providers |", "|---|---|---|---|---|"]
    for family, results in report.get("families", {}).items():
        v = results.get("validate")
        if v:
            lines.append(f"| {family} | {v['passed']} | {v['stages']['end_to_end']['max_abs']:.3g} | "
                         f"{v['threshold']} | {', '.join(v.get('providers', []))} |")
    lines += ["", "## Steps", "", "| step | status | seconds | GPU memory peak MiB | peak RSS GiB | note |",
              "|---|---|---|---|---|---|"]
    for s in report.get("steps", []):
        note = s.get("reason") or (s["tail"][-1] if s.get("tail") else "")
        cells = [s["name"], s["status"],
                 *(_or_dash(s.get(k)) for k in ("seconds", "gpu_memory_peak_mib", "peak_rss_gib")),
                 note.replace("|", "/")[:160]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("step", help="run one step and record it")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--family", required=True)
    p.add_argument("--step", required=True)
    p.add_argument("--log-dir", type=Path, required=True)
    p.add_argument("--deadline", type=float, required=True, help="Unix time at which the budget ends")
    p.add_argument("--result", type=Path, help="JSON (or JSON-lines) file the command writes")
    p.add_argument("--key", help="where the result goes under families.FAMILY (dotted)")
    p.add_argument("--gpu", type=int, default=0, help="GPU whose memory is sampled")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND...")
    p = commands.add_parser("skip", help="record a step as skipped")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--family", required=True)
    p.add_argument("--step", required=True)
    p.add_argument("--reason", required=True)
    p = commands.add_parser("config", help="record the run's configuration (KEY=VALUE...)")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("pairs", nargs="+")
    p = commands.add_parser("env", help="record versions, the GPU and onnxruntime's providers")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--require-cuda", action="store_true", help="exit 1 when torch sees no GPU")
    commands.add_parser("providers", help="print the usable onnxruntime providers, one per line")
    p = commands.add_parser("ort-bench", help="onnxruntime latency of an export with one provider chain")
    p.add_argument("export", type=Path)
    p.add_argument("--provider", required=True, choices=sorted(PROVIDER_CHAINS))
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device-id", type=int, default=0)
    p.add_argument("--json", type=Path, required=True)
    p = commands.add_parser("finish", help="mark the report finished")
    p.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "step":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not command:
            parser.error("step needs -- COMMAND...")
        return run_step(args.report, args.family, args.step, command, args.log_dir, args.deadline,
                        args.result, args.key, args.gpu)
    if args.command == "skip":
        record_skip(args.report, args.family, args.step, args.reason)
    elif args.command == "config":
        report = read_report(args.report)
        report["config"] |= dict(pair.split("=", 1) for pair in args.pairs)
        write_report(args.report, report)
    elif args.command == "env":
        report = read_report(args.report)
        report["environment"] = environment()
        write_report(args.report, report)
        print(json.dumps(report["environment"], indent=2))
        if args.require_cuda and not report["environment"]["cuda_available"]:
            print("gpu_check env: error: torch sees no CUDA GPU", file=sys.stderr)
            return 1
    elif args.command == "providers":
        import onnxruntime as ort

        from snapflow_ros.runtime.backends import usable_providers

        print("\n".join(usable_providers(ort.get_available_providers())))
    elif args.command == "ort-bench":
        from snapflow_ros.errors import SnapflowError

        try:
            result = ort_latency(args.export, args.provider, args.repeats, args.warmup, args.device_id)
        except SnapflowError as error:
            print(f"gpu_check ort-bench: error: {error}", file=sys.stderr)
            return 2
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    elif args.command == "finish":
        report = read_report(args.report)
        report["finished"] = True
        write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
