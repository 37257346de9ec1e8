"""Decomposed ONNX export and the two runtime backends: parity with torch (FP32 within 1e-4 end
to end) for the built-in policy and tiny pi0 / pi0.5 / SmolVLA, the KV cache kept as OrtValues
between prefix and expert runs, validation that fails on a wrong reference, FP16, and bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import save_small_student
from snapflow_distill.synthetic import make_dataset
from snapflow_ros.errors import CheckpointError
from snapflow_ros.export.manifest import Manifest
from snapflow_ros.export.onnx_export import export_policy
from snapflow_ros.export.validate import validate_export
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import save_policy
from snapflow_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend

SNAPFLOW = str(Path(sys.executable).parent / "snapflow")


@pytest.fixture(scope="module")
def builtin_student(tmp_path_factory) -> Path:
    return save_small_student(tmp_path_factory.mktemp("builtin") / "student")


@pytest.fixture(scope="module")
def builtin_export(builtin_student, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("export") / "student_onnx"
    export_policy(builtin_student, output, monolithic=(1,))
    return output


def test_manifest_describes_the_graphs(builtin_export, builtin_student):
    manifest = Manifest.read(builtin_export)
    assert manifest.family == "builtin" and manifest.steps == 1  # a student runs one step
    assert manifest.precision == "fp32" and manifest.opset == 18
    assert [s.name for s in manifest.prefix_inputs] == ["images", "tokens", "token_mask", "state"]
    assert [s.name for s in manifest.cache] == ["key_0", "key_1", "value_0", "value_1", "prefix_mask"]
    assert manifest.velocity.shape == [1, 8, 2]
    assert manifest.source_checkpoint_id.startswith("student@")
    for file in manifest.graphs.values():
        assert (builtin_export / file).is_file()
    assert (builtin_export / "processor" / "normalization.safetensors").is_file()
    policy = load_policy(builtin_student)
    assert manifest.normalization["action"]["mean"] == pytest.approx(policy.action_normalizer.mean.tolist())
    assert len(manifest.normalization["state"]["std"]) == 4


def test_onnxruntime_matches_torch_and_keeps_the_cache_as_ortvalues(builtin_export, builtin_student):
    import onnxruntime as ort

    policy = load_policy(builtin_student)
    torch_backend, ort_backend = TorchBackend(policy), OnnxRuntimeBackend(builtin_export)
    batch = policy.example_batch(1, seed=7)
    cache = ort_backend.prefix(ort_backend.prepare(batch))
    assert all(isinstance(value, ort.OrtValue) for value in cache)
    assert all(value.device_name().lower() == ort_backend.device_type for value in cache)
    noise = torch.randn(1, 8, 2, generator=torch.Generator().manual_seed(2))
    for steps in (1, 10):
        torch.testing.assert_close(ort_backend.sample(batch, noise, steps), torch_backend.sample(batch, noise, steps),
                                   rtol=0, atol=1e-4)
    torch.testing.assert_close(ort_backend.sample_monolithic(batch, noise, 1), torch_backend.sample(batch, noise, 1),
                               rtol=0, atol=1e-4)


def test_validate_passes_for_the_source_and_fails_for_another_checkpoint(builtin_export, builtin_student, tmp_path):
    report = validate_export(builtin_export, builtin_student, threshold=1e-4)
    assert report["passed"] and report["reference_is_export_source"]
    assert set(report["stages"]) == {"preprocess", "prefix", "expert_step", "end_to_end"}
    assert report["stages"]["end_to_end"]["max_abs"] <= 1e-4

    other = load_policy(builtin_student)
    with torch.no_grad():  # (a uniform shift would vanish behind the zero-mean LayerNorm)
        other.action_out_proj.weight.add_(torch.randn_like(other.action_out_proj.weight) * 0.5)
    save_policy(other, tmp_path / "other")
    result = subprocess.run([SNAPFLOW, "validate", str(builtin_export), "--reference", str(tmp_path / "other"),
                             "--json", str(tmp_path / "report.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "FAILED" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert not report["passed"] and not report["reference_is_export_source"]
    assert report["stages"]["prefix"]["max_abs"] <= 1e-4  # only the expert changed


def test_fp16_export_runs_close_to_fp32(builtin_student, tmp_path):
    export_policy(builtin_student, tmp_path / "fp16", fp16=True)
    assert Manifest.read(tmp_path / "fp16").precision == "fp16"
    report = validate_export(tmp_path / "fp16", builtin_student, threshold=2e-2)
    assert report["passed"], report["stages"]


def test_failed_export_leaves_nothing_behind(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"type": "builtin"}')
    with pytest.raises(CheckpointError):
        export_policy(tmp_path / "bad", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
    with pytest.raises(CheckpointError, match="not a snapflow export"):
        OnnxRuntimeBackend(tmp_path / "bad")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["pi0", "pi05", "smolvla"])
def test_lerobot_exports_match_torch_in_fp32_and_fp16_for_several_instructions(family, tmp_path):
    """Regression: `export --fp16` of every LeRobot family failed onnx.checker (LeRobot's float32
    islands), and a SmolVLA export only served the example prompt's token count."""
    from snapflow_ros.families.lerobot.builders import build_lerobot_checkpoint

    data = make_dataset(64, seed=2)[0]
    teacher = build_lerobot_checkpoint(family, tmp_path / "teacher", states=data.states, actions=data.actions,
                                       cameras=("front",), instructions=data.instructions, chunk_size=8)
    manifest = export_policy(teacher, tmp_path / "onnx")
    assert manifest.steps == 10 and manifest.noise_dim == 8  # a teacher; LeRobot pads actions to 8 here
    assert {"observation.state", "action"} <= set(manifest.normalization)
    max_tokens = load_policy(teacher).lerobot.config.tokenizer_max_length
    assert next(s.shape for s in manifest.prefix_inputs if s.name == "lang_tokens") == [1, max_tokens]
    report = validate_export(tmp_path / "onnx", teacher, threshold=1e-4)
    assert report["passed"], {k: v["max_abs"] for k, v in report["stages"].items()}
    instructions = [case["instruction"] for case in report["cases"]]
    assert len({len(text.split()) for text in instructions}) == 3  # three prompt lengths served

    manifest = export_policy(teacher, tmp_path / "fp16", fp16=True)
    assert manifest.precision == "fp16" and {s.dtype for s in manifest.cache} >= {"float16"}
    report = validate_export(tmp_path / "fp16", teacher, threshold=2e-2)
    assert report["passed"], {k: v["max_abs"] for k, v in report["stages"].items()}
    assert report["stages"]["end_to_end"]["max_abs"] > 0  # it did compute in float16


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 10 min and 18 GB peak RSS on 2 cores (4 GB of weights)
def test_width_pi05_over_the_protobuf_limit_exports_with_external_data(tmp_path):
    """Full widths and vocabulary (4 GB of float32 weights, the embedding alone 2.1 GB): the prefix
    graph keeps its weights in prefix.onnx.data and still matches torch."""
    from snapflow_ros.export.onnx_export import PROTOBUF_LIMIT
    from snapflow_ros.families.lerobot.builders import build_lerobot_checkpoint

    data = make_dataset(16, seed=2)[0]
    teacher = build_lerobot_checkpoint("pi05", tmp_path / "teacher", states=data.states, actions=data.actions,
                                       cameras=("front",), instructions=data.instructions, size="width")
    manifest = export_policy(teacher, tmp_path / "onnx")
    assert "prefix" in manifest.external_data
    data_file = tmp_path / "onnx" / "prefix.onnx.data"
    assert data_file.stat().st_size > PROTOBUF_LIMIT > (tmp_path / "onnx" / "prefix.onnx").stat().st_size
    report = validate_export(tmp_path / "onnx", teacher, threshold=1e-4, cases=1)
    assert report["passed"], {k: v["max_abs"] for k, v in report["stages"].items()}


@pytest.mark.slow
def test_bench_reports_both_backends_and_ratios(builtin_student, tmp_path):
    teacher = load_policy(builtin_student)
    with torch.no_grad():
        teacher.target_time.linear_out.weight.zero_()
    save_policy(teacher, tmp_path / "teacher")
    result = subprocess.run([SNAPFLOW, "bench", "--teacher", str(tmp_path / "teacher"), "--student",
                             str(builtin_student), "--workdir", str(tmp_path / "work"), "--json",
                             str(tmp_path / "bench.json"), "--repeats", "5"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"torch/teacher@10/decomposed", "torch/student@1/decomposed", "onnxruntime/teacher@10/decomposed",
            "onnxruntime/student@1/decomposed", "onnxruntime/student@1/monolithic",
            "onnxruntime/teacher@10/monolithic", "torch/student@1/rtc", "onnxruntime/student@1/rtc"
            } <= set(report["latency_ms"])
    p50 = {name: timing["p50"] for name, timing in report["latency_ms"].items()}
    for backend in ("torch", "onnxruntime"):  # the ratios are the report's own timings, side by side
        assert report["ratios_p50"][f"{backend}: teacher@10 / student@1"] == pytest.approx(
            p50[f"{backend}/teacher@10/decomposed"] / p50[f"{backend}/student@1/decomposed"])
        assert report["ratios_p50"][f"{backend}: student@1 rtc / plain"] == pytest.approx(
            p50[f"{backend}/student@1/rtc"] / p50[f"{backend}/student@1/decomposed"])
