"""Every failure of a `snapflow` command: exit code 2 and one line on stderr saying why, never a
traceback (unless --debug / SNAPFLOW_DEBUG=1 asks for one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snapflow_ros.cli import main as cli_main
from snapflow_ros.cli import training

SNAPFLOW = str(Path(sys.executable).parent / "snapflow")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SNAPFLOW, *args], capture_output=True, text=True, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def test_a_diverging_distillation_exits_2_with_one_line_not_a_traceback(tmp_path):
    """A NaN weight in the teacher: the trainer stops at step 1 (TrainingDivergedError)."""
    from snapflow_distill.synthetic import task_config
    from snapflow_ros.families.builtin import BuiltinVLA
    from snapflow_ros.files import save_policy

    torch.manual_seed(0)
    teacher = BuiltinVLA(task_config(width=16, num_layers=1))
    with torch.no_grad():
        teacher.action_out_proj.weight.fill_(float("nan"))
    save_policy(teacher, tmp_path / "teacher")
    result = _run("distill", str(tmp_path / "teacher"), "--output", str(tmp_path / "out"), "--steps", "2",
                  "--batch-size", "4", "--samples", "16", "--holdout", "4", "--checkpoint-every", "0",
                  "--device", "cpu")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "snapflow distill: error: loss became nan at step")
    assert not (tmp_path / "out" / "policy").exists()


def test_a_garbage_weights_file_exits_2_with_one_line(tmp_path):
    checkpoint = tmp_path / "garbage"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"type": "builtin"}')
    (checkpoint / "model.safetensors").write_bytes(b"\xff" * 64)
    (checkpoint / "normalization.safetensors").write_bytes(b"not a safetensors file\n\x00")
    result = _run("export", str(checkpoint), "--output", str(tmp_path / "export"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("snapflow export: error: ") and "model.safetensors: unreadable" in line


@pytest.fixture
def eval_raising(monkeypatch):
    """`snapflow eval` whose run raises the given exception; main() called in this process."""
    monkeypatch.setattr(cli_main.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM handler
    monkeypatch.delenv("SNAPFLOW_DEBUG", raising=False)

    def arrange(error: BaseException) -> None:
        def fail(args):
            raise error

        monkeypatch.setattr(training, "evaluate_checkpoints", fail)

    return arrange


@pytest.mark.parametrize("error", [
    RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB"),
    ValueError("could not broadcast input array from shape (3,) into shape (4,)"),
    FloatingPointError("loss became nan at step 7"),
    FileNotFoundError(2, "No such file or directory", "teacher/config.json"),
])
def test_plain_errors_from_inside_a_command_are_one_line_exit_2(eval_raising, capsys, error):
    eval_raising(error)
    assert cli_main.main(["eval", "teacher"]) == 2
    stderr = capsys.readouterr().err
    (line,) = stderr.splitlines()
    assert line.startswith(f"snapflow eval: error: {type(error).__name__}: ")
    assert " ".join(str(error).split()) in line


def test_debug_flag_and_env_reraise_for_the_traceback(eval_raising, monkeypatch):
    eval_raising(RuntimeError("deep inside"))
    with pytest.raises(RuntimeError, match="deep inside"):
        cli_main.main(["--debug", "eval", "teacher"])
    monkeypatch.setenv("SNAPFLOW_DEBUG", "1")
    with pytest.raises(RuntimeError, match="deep inside"):
        cli_main.main(["eval", "teacher"])


def test_ctrl_c_exits_130_with_one_line(eval_raising, capsys):
    eval_raising(KeyboardInterrupt())
    assert cli_main.main(["eval", "teacher"]) == 130
    assert capsys.readouterr().err == "snapflow eval: interrupted\n"


def test_a_bug_still_shows_its_traceback(eval_raising):
    """Not an input or run failure: a TypeError / KeyError is ours to fix, so it is not hidden."""
    eval_raising(KeyError("results"))
    with pytest.raises(KeyError):
        cli_main.main(["eval", "teacher"])
