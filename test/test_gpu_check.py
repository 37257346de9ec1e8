"""The GPU path without a GPU: which execution providers (and options) onnxruntime sessions get,
the onnxruntime backend with an explicit provider list, the GPU check's step runner and report,
and (slow) scripts/gpu_check.sh end to end in its CPU dry run at tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, save_small_student
from snapflow_ros.errors import ConfigError
from snapflow_ros.export.onnx_export import export_policy
from snapflow_ros.runtime import backends
from snapflow_ros.runtime.backends import CPU, CUDA, TENSORRT, OnnxRuntimeBackend, execution_providers, usable_providers
from snapflow_ros.runtime.gpu_check import (
    LATENCY_KEYS,
    ort_latency,
    read_report,
    record_skip,
    render_markdown,
    run_step,
)

GPU_ORT = [TENSORRT, CUDA, CPU]


# --- provider selection (a pure function) -----------------------------------------------------------

def test_a_cpu_onnxruntime_gets_the_cpu_provider_without_options():
    assert execution_providers(["AzureExecutionProvider", CPU], "fp32") == [(CPU, {})]
    assert execution_providers(["AzureExecutionProvider", CPU], "fp16", device_id=3) == [(CPU, {})]


def test_gpu_providers_in_preference_order_with_device_fp16_and_engine_cache(tmp_path):
    chosen = execution_providers([CPU, CUDA, TENSORRT], "fp16", device_id=1, engine_cache=tmp_path / "engines")
    assert [name for name, _ in chosen] == GPU_ORT
    trt, cuda, cpu = (options for _, options in chosen)
    assert trt == {"device_id": "1", "trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                   "trt_engine_cache_path": str(tmp_path / "engines"), "trt_timing_cache_enable": "True",
                   "trt_timing_cache_path": str(tmp_path / "engines")}
    assert cuda == {"device_id": "1"} and cpu == {}


def test_an_fp32_export_keeps_tensorrt_in_fp32():
    (name, options), *_ = execution_providers(GPU_ORT, "fp32")
    assert name == TENSORRT and options["trt_fp16_enable"] == "False" and options["device_id"] == "0"
    assert "trt_engine_cache_path" not in options  # onnxruntime's default (the working directory)


def test_explicit_providers_are_taken_as_given_and_must_be_available():
    assert execution_providers(GPU_ORT, "fp16", device_id=2, requested=[CUDA, CPU]) == [
        (CUDA, {"device_id": "2"}), (CPU, {})]
    with pytest.raises(ConfigError, match=r"\['CUDAExecutionProvider'\] are not available.*onnxruntime-gpu"):
        execution_providers(["AzureExecutionProvider", CPU], "fp32", requested=[CUDA, CPU])


def test_given_options_override_the_defaults_as_strings():
    chosen = dict(execution_providers(GPU_ORT, "fp16", options={
        CUDA: {"device_id": 1, "arena_extend_strategy": "kSameAsRequested"},
        TENSORRT: {"trt_fp16_enable": False, "trt_max_workspace_size": 2**31}}))
    assert chosen[CUDA] == {"device_id": "1", "arena_extend_strategy": "kSameAsRequested"}
    assert chosen[TENSORRT]["trt_fp16_enable"] == "False"
    assert chosen[TENSORRT]["trt_max_workspace_size"] == str(2**31)
    assert chosen[TENSORRT]["trt_engine_cache_enable"] == "True"
    with pytest.raises(ConfigError, match="provider options given for.*TensorrtExecutionProvider"):
        execution_providers([CUDA, CPU], "fp16", options={TENSORRT: {"trt_fp16_enable": True}})


def test_tensorrt_is_usable_only_where_its_libraries_load(monkeypatch):
    monkeypatch.setattr(backends.ctypes.util, "find_library", lambda name: None)
    assert usable_providers(GPU_ORT) == [CUDA, CPU]
    monkeypatch.setattr(backends.ctypes.util, "find_library",
                        lambda name: "libnvinfer.so.10" if name == "nvinfer" else None)
    assert usable_providers(GPU_ORT) == GPU_ORT
    assert usable_providers([CPU]) == [CPU]


# --- the backend on this machine's onnxruntime ----------------------------------------------------------

@pytest.fixture(scope="module")
def builtin_export(tmp_path_factory) -> Path:
    student = save_small_student(tmp_path_factory.mktemp("builtin") / "student")
    output = tmp_path_factory.mktemp("export") / "student_onnx"
    export_policy(student, output)
    return output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA cannot start")
def test_backend_on_the_cpu_by_default_or_by_request(builtin_export):
    default = OnnxRuntimeBackend(builtin_export)
    explicit = OnnxRuntimeBackend(builtin_export, providers=[CPU])
    for backend in (default, explicit):
        assert backend.providers == [CPU] and backend.device_type == "cpu" and backend.device_id == 0
        cache = backend.prefix(backend.prepare(backend.processor.example_batch(1)))
        assert {value.device_name().lower() for value in cache} == {"cpu"}
    assert not (builtin_export / backends.ENGINE_CACHE).exists()  # only TensorRT writes engines
    noise = torch.randn(1, default.chunk_size, default.noise_dim, generator=torch.Generator().manual_seed(0))
    batch = default.processor.example_batch(1)
    torch.testing.assert_close(explicit.sample(batch, noise, 2), default.sample(batch, noise, 2), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA cannot start")
def test_backend_refuses_a_provider_that_did_not_start(builtin_export, monkeypatch):
    # As onnxruntime-gpu on a machine without a GPU: CUDA listed, the session falls back to the CPU.
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(ConfigError, match="asked for.*CUDAExecutionProvider.*started.*'CPUExecutionProvider'"):
        OnnxRuntimeBackend(builtin_export, providers=[CUDA, CPU])
    fallback = OnnxRuntimeBackend(builtin_export)  # no explicit choice: the best that starts
    assert fallback.providers == [CPU] and fallback.device_type == "cpu"


# --- the GPU check's driver -------------------------------------------------------------------------------

def test_ort_latency_reports_bench_lerobot_fields(builtin_export):
    result = ort_latency(builtin_export, "cpu", repeats=3, warmup=1)
    assert result["provider"] == "cpu" and result["providers"] == [CPU] and result["cache_device"] == "cpu"
    for key in LATENCY_KEYS:
        assert 0 < result[key]["p50"] <= result[key]["p95"]
    assert result["ratio_end_to_end_10_over_1"] == pytest.approx(
        result["end_to_end_10_steps"]["p50"] / result["end_to_end_1_steps"]["p50"])
    with pytest.raises(ConfigError, match="--provider 'rocm'"):
        ort_latency(builtin_export, "rocm", repeats=1, warmup=0)


def test_step_runner_records_time_results_and_failures(tmp_path):
    report = tmp_path / "out" / "gpu_table.json"
    result = tmp_path / "result.json"
    result.write_text('{"stale": true}')  # from an earlier run: must not be attached
    write = f"import json, time; time.sleep(0.2); json.dump({{'value': 7}}, open({str(result)!r}, 'w'))"
    rc = run_step(report, "pi05", "bench", [sys.executable, "-c", write], tmp_path / "logs", time.time() + 60,
                  result=result, key="onnxruntime.cuda")
    assert rc == 0
    rc = run_step(report, "pi05", "export", [sys.executable, "-c", "print('exporting'); raise SystemExit('no fp16')"],
                  tmp_path / "logs", time.time() + 60)
    assert rc == 1
    record_skip(report, "pi05", "validate", "needs pi05/export (failed)")
    data = read_report(report)
    bench, export, validate = data["steps"]
    assert bench["status"] == "ok" and bench["seconds"] >= 0.2 and bench["rc"] == 0
    assert bench["peak_rss_gib"] > 0 and bench["gpu_memory_peak_mib"] is None  # no nvidia-smi here
    assert data["families"]["pi05"]["onnxruntime"]["cuda"] == {"value": 7}
    assert export["status"] == "failed" and export["tail"] == ["exporting", "no fp16"]
    assert validate["status"] == "skipped" and "needs pi05/export" in validate["reason"]
    assert not data["finished"]
    markdown = (tmp_path / "out" / "gpu_table.md").read_text()
    assert "| pi05/export | failed |" in markdown and "(partial" in markdown
    summary = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "== pi05/export: failed (rc 1" in summary and "no fp16" in summary


def test_step_runner_stops_a_step_at_the_budget_and_skips_past_it(tmp_path):
    report = tmp_path / "gpu_table.json"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.monotonic()
    assert run_step(report, "pi0", "distill", sleeper, tmp_path, time.time() + 2, min_step_s=1) == 124
    assert time.monotonic() - started < 30
    assert run_step(report, "pi0", "export", sleeper, tmp_path, time.time() + 5) == 75  # under MIN_STEP_S
    distill, export = read_report(report)["steps"]
    assert distill["status"] == "timeout" and distill["rc"] == 124
    assert export["status"] == "skipped" and export["reason"].startswith("budget")


def test_markdown_table_has_one_row_per_family_and_backend():
    stats = {"p50": 2.0, "p95": 3.0, "p99": 3.5, "mean": 2.2}
    torch_row = {key: stats for key in LATENCY_KEYS} | {"ratio_end_to_end_10_over_1": 4.5}
    report = {"config": {"size": "full", "dtype": "bfloat16", "device": "cuda"}, "finished": True,
              "environment": {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "torch_cuda": "13.0"},
              "steps": [], "families": {"pi05": {
                  "torch": {"device": "cuda", "dtype": "bfloat16", "families": {"pi05": torch_row}},
                  "onnxruntime": {"cuda": torch_row | {"precision": "fp16"}},
                  "validate": {"passed": True, "threshold": 0.05, "providers": [CUDA, CPU],
                               "stages": {"end_to_end": {"max_abs": 0.01}}}}}}
    markdown = render_markdown(report)
    assert markdown.startswith("# GPU check: NVIDIA H200")
    assert ("| pi05 | torch (cuda, bfloat16) | 2.00 (3.00) | 2.00 (3.00) | 2.00 (3.00) | 2.00 (3.00) | 4.50 |"
            in markdown)
    assert "| pi05 | onnxruntime cuda (fp16) |" in markdown
    assert "| pi05 | True | 0.01 | 0.05 | CUDAExecutionProvider, CPUExecutionProvider |" in markdown
    assert "partial" not in markdown


# --- the whole script, CPU dry run ----------------------------------------------------------------------

@pytest.mark.slow
def test_gpu_check_dry_run_end_to_end(tmp_path):
    env = os.environ | {"OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
                        "GPU_CHECK_FAMILIES": "pi05", "GPU_CHECK_REPEATS": "3", "GPU_CHECK_BUDGET_S": "560"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=590)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_table.json").read_text())
    assert report["finished"] and report["config"]["size"] == "tiny" and report["config"]["device"] == "cpu"
    assert report["environment"]["onnxruntime_usable"][-1] == CPU
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["setup/env", "pi05/make", "pi05/bench", "pi05/distill", "pi05/export",
                           "pi05/validate", "pi05/ort-cpu"]
    assert all(s["status"] == "ok" and s["seconds"] > 0 and s["peak_rss_gib"] > 0 for s in steps.values())
    pi05 = report["families"]["pi05"]
    rows = {"torch": pi05["torch"]["families"]["pi05"], "onnxruntime": pi05["onnxruntime"]["cpu"]}
    for row in rows.values():
        assert all(row[key]["p50"] > 0 for key in LATENCY_KEYS) and row["ratio_end_to_end_10_over_1"] > 0
    assert rows["onnxruntime"]["precision"] == "fp16" and rows["onnxruntime"]["providers"] == [CPU]
    assert pi05["validate"]["passed"] and pi05["validate"]["precision"] == "fp16"
    assert pi05["distill"]["step"] == 3
    markdown = (tmp_path / "out" / "gpu_table.md").read_text()
    assert "| pi05 | torch (cpu, float32) |" in markdown and "| pi05 | onnxruntime cpu (fp16) |" in markdown
    assert "pi05/ort-cpu" in (tmp_path / "out" / "gpu_check.log").read_text()
