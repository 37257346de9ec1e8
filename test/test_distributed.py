"""Data parallelism through torchrun: 2 CPU processes (gloo) average their gradients and start
from rank 0's weights; `snapflow distill` under torchrun writes one policy and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# --standalone: a local rendezvous on a free port, so parallel runs do not collide.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=300)


def test_ranks_average_gradients(tmp_path):
    result = _torchrun(str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ok").read_text() == "ok"


def test_distill_under_torchrun(tmp_path):
    snapflow = Path(sys.executable).parent / "snapflow"
    small = ["--samples", "128", "--holdout", "16", "--batch-size", "8"]
    teacher = subprocess.run([str(snapflow), "train-teacher", "--output", str(tmp_path / "t"),
                              "--steps", "5", "--checkpoint-every", "0", *small],
                             capture_output=True, text=True, timeout=300)
    assert teacher.returncode == 0, teacher.stderr
    args = ["-m", "snapflow_ros.cli.main", "distill", str(tmp_path / "t" / "policy"),
            "--output", str(tmp_path / "s"), "--steps", "4", "--checkpoint-every", "2",
            "--log-every", "2", *small]
    result = _torchrun(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # rank 0 alone logs
    assert (tmp_path / "s" / "policy" / "model.safetensors").is_file()
    checkpoint = tmp_path / "s" / "checkpoints" / "step-00000002"
    rng = {k for k in load_file(checkpoint / "training_state.safetensors") if k.startswith("rng/")}
    assert rng == {"rng/0/data", "rng/0/loss", "rng/1/data", "rng/1/loss"}  # both ranks' streams
    # Re-running the finished job resumes from step 2 and does the remaining steps again.
    again = _torchrun(*args)
    assert again.returncode == 0, again.stderr[-3000:]
