"""`snapflow bench`: end-to-end latency per backend (torch, onnxruntime) for the teacher at
N steps and the student at 1 step, decomposed vs monolithic ONNX graphs, and the student with a
committed prefix (rtc chunking) vs without, all in one run."""

from __future__ import annotations

from pathlib import Path

import torch

from snapflow_ros.export.manifest import MANIFEST, Manifest
from snapflow_ros.export.onnx_export import export_policy
from snapflow_ros.families.registry import load_policy
from snapflow_ros.files import checkpoint_id
from snapflow_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend
from snapflow_ros.runtime.timing import measure_interleaved

RTC_DELAY = 4  # committed actions of the rtc probe (200 ms at 20 Hz)


def ensure_export(checkpoint: Path, output: Path, steps: int) -> Path:
    """Reuse `output` when it was exported from these exact weights with these steps."""
    if (output / MANIFEST).is_file():
        manifest = Manifest.read(output)
        if (manifest.source_checkpoint_id == checkpoint_id(checkpoint) and manifest.steps == steps
                and f"monolithic_{steps}" in manifest.graphs):
            return output
    export_policy(checkpoint, output, steps=steps, monolithic=(steps,))
    return output


@torch.no_grad()
def bench_backends(teacher: Path, student: Path, workdir: Path, teacher_steps: int = 10,
                   repeats: int = 50, seed: int = 0, threads: int = 0) -> dict:
    teacher_policy, student_policy = load_policy(teacher), load_policy(student)
    exports = {"teacher": ensure_export(teacher, workdir / "teacher_onnx", teacher_steps),
               "student": ensure_export(student, workdir / "student_onnx", 1)}
    torch_teacher, torch_student = TorchBackend(teacher_policy), TorchBackend(student_policy)
    ort_teacher = OnnxRuntimeBackend(exports["teacher"], threads=threads)
    ort_student = OnnxRuntimeBackend(exports["student"], threads=threads)
    batch = student_policy.example_batch(1, seed=seed)
    noise = torch.randn(1, student_policy.chunk_size, student_policy.noise_dim,
                        generator=torch.Generator().manual_seed(seed))
    caches = {"torch": torch_student.prefix(torch_student.prepare(batch)),
              "onnxruntime": ort_student.prefix(ort_student.prepare(batch))}
    # rtc: the same chunk with a committed prefix (per-action times, the prefix kept in every pass)
    delay = min(RTC_DELAY, student_policy.chunk_size - 1)
    rtc_batch = {**batch, "actions": torch.randn(1, student_policy.chunk_size, student_policy.action_dim,
                                                 generator=torch.Generator().manual_seed(seed + 1))}
    n = teacher_steps
    probes = {}
    for name, t_backend, s_backend in (("torch", torch_teacher, torch_student),
                                       ("onnxruntime", ort_teacher, ort_student)):
        probes[f"{name}/teacher@{n}/decomposed"] = lambda b=t_backend: b.sample(batch, noise, n)
        probes[f"{name}/student@1/decomposed"] = lambda b=s_backend: b.sample(batch, noise, 1)
        probes[f"{name}/student@1/rtc"] = lambda b=s_backend: b.sample(rtc_batch, noise, 1, delay)
        probes[f"{name}/student/prefix"] = lambda b=s_backend: b.prefix(b.prepare(batch))
        probes[f"{name}/student/expert_step"] = (
            lambda b=s_backend, c=caches[name]: b.step(noise, torch.ones(1), torch.zeros(1), c))
    probes[f"onnxruntime/teacher@{n}/monolithic"] = lambda: ort_teacher.sample_monolithic(batch, noise, n)
    probes["onnxruntime/student@1/monolithic"] = lambda: ort_student.sample_monolithic(batch, noise, 1)
    latency = measure_interleaved(probes, repeats)
    p50 = {k: v["p50"] for k, v in latency.items()}
    ratios = {}
    for name in ("torch", "onnxruntime"):
        ratios[f"{name}: teacher@{n} / student@1"] = (p50[f"{name}/teacher@{n}/decomposed"]
                                                      / p50[f"{name}/student@1/decomposed"])
        ratios[f"{name}: student@1 / (prefix + expert_step)"] = p50[f"{name}/student@1/decomposed"] / (
            p50[f"{name}/student/prefix"] + p50[f"{name}/student/expert_step"])
        ratios[f"{name}: student@1 rtc / plain"] = (p50[f"{name}/student@1/rtc"]
                                                    / p50[f"{name}/student@1/decomposed"])
    ratios["onnxruntime: student@1 decomposed / monolithic"] = (
        p50["onnxruntime/student@1/decomposed"] / p50["onnxruntime/student@1/monolithic"])
    ratios[f"onnxruntime: teacher@{n} decomposed / monolithic"] = (
        p50[f"onnxruntime/teacher@{n}/decomposed"] / p50[f"onnxruntime/teacher@{n}/monolithic"])
    ratios["student@1: onnxruntime / torch"] = (
        p50["onnxruntime/student@1/decomposed"] / p50["torch/student@1/decomposed"])
    return {"teacher": str(teacher), "student": str(student), "family": student_policy.family,
            "teacher_steps": n, "rtc_delay": delay, "repeats": repeats, "seed": seed, "batch_size": 1,
            "torch_threads": torch.get_num_threads(), "onnxruntime_providers": ort_student.providers,
            "latency_ms": latency, "ratios_p50": ratios}
