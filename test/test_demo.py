"""The README's main job at this stage: `snapflow demo` starts policy_node as a process and
prints the chunks it publishes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def test_demo_prints_published_chunks():
    snapflow = Path(sys.executable).parent / "snapflow"
    result = subprocess.run(
        [str(snapflow), "demo", "--chunks", "3", "--timeout", "60"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # 10 actions per chunk, fewer when drop_stale_actions removed some already due
    chunk_lines = re.findall(r"^chunk #\d+ +policy=builtin:hold-position (?:10|[1-9])x7 ", result.stdout, re.M)
    assert len(chunk_lines) >= 3, result.stdout
    assert "received 3 ActionChunk" in result.stdout


def test_demo_rejects_a_missing_params_file(tmp_path):
    snapflow = Path(sys.executable).parent / "snapflow"
    result = subprocess.run(
        [str(snapflow), "demo", "--params-file", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "nope.yaml: no such file" in result.stderr
