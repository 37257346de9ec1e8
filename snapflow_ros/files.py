"""Files as snapflow_ros writes and reads them: directories replaced atomically (temporary
sibling + rename), and checkpoint directories' config.json and safetensors read strictly (a
missing or mismatched tensor is an error, never a randomly initialised policy).

A failed write (a full disk, a file-size limit, no permission) is reported naming the file
(reported_write): safetensors raises its own error type and write() an OSError without a file
name. A run directory is held by one writer at a time (output_lock: flock on DIR/.lock).

The bottom of the import tree: families, export, bags and training import it; it imports no
family (choosing the family of a checkpoint is snapflow_ros.families.registry's job).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from snapflow_ros.errors import CheckpointError, ConfigError, SnapflowError
from snapflow_ros.policy.contract import FlowPolicy

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PROVENANCE = "provenance.json"
LOCK = ".lock"  # in a run directory: flock'ed by the command writing it (output_lock)
WRITE_FAILURES = (OSError, SafetensorError)  # what writers raise for a full disk or a size limit


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yields an empty temporary sibling of `final`; on success it replaces `final` by rename.

    On an exception the temporary directory is removed and `final` is untouched, so a reader
    sees the old complete directory or the new complete one, never a partial one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """atomic_directory for writers that create their directory themselves (rosbags, LeRobot):
    yields a path that does not exist yet; what they wrote there lands at `final` by rename."""
    final = Path(final)
    with atomic_directory(final) as tmp:
        inner = tmp / final.name
        yield inner
        for item in inner.iterdir():
            os.replace(item, tmp / item.name)
        inner.rmdir()


def stale_temporaries(directory: Path) -> list[Path]:
    """What atomic_directory leaves in `directory` when its process is killed mid-write (the
    temporary .NAME.tmp-* and .NAME.old-* siblings); loaders never read them (their names start
    with a dot), the single writer of a run directory may remove them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name))


@contextlib.contextmanager
def reported_write(path: Path, error: type[SnapflowError] = CheckpointError) -> Iterator[None]:
    """Re-raises a failure of the writes inside (a full disk, a file-size limit, no permission) as
    `error` naming `path`, the file or directory as it would have appeared."""
    try:
        yield
    except SnapflowError:
        raise
    except WRITE_FAILURES as failure:
        reason = " ".join(str(failure).split()) or repr(failure)
        raise error(f"cannot write {path}: {type(failure).__name__}: {reason}") from failure


def save_policy(policy: FlowPolicy, directory: Path, provenance: dict[str, Any] | None = None) -> Path:
    """Writes the policy's directory (its family's layout) atomically, plus provenance.json.

    Here and not in the registry: saving needs no family choice (the policy knows its layout),
    and families save too (a built random LeRobot checkpoint)."""
    with atomic_directory(directory) as tmp:
        with reported_write(directory):  # the family writes several files; it says none of their names
            policy.save_pretrained(tmp)
        if provenance is not None:
            with reported_write(Path(directory) / PROVENANCE):
                (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return Path(directory)


def lock_holder(directory: Path) -> str | None:
    """Who holds `directory`'s output_lock ("pid N (snapflow distill, job J)"), or None when no
    process holds it. Only probes: takes and drops the lock at once."""
    path = Path(directory) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody has ever written there
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_held(directory: Path, name: str = "output directory") -> None:
    """ConfigError naming `directory` (as `name`) and its holder when another run holds its
    output_lock; a probe, like lock_holder."""
    holder = lock_holder(directory)
    if holder is not None:
        raise _in_use(directory, name, holder)


def _in_use(directory: Path, name: str, holder: str) -> ConfigError:
    return ConfigError(f"{name} {directory} is in use by another run: {holder}; wait for it to finish or "
                       f"choose another directory")


def _describe_holder(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        owner = {}
    what = ", ".join(str(v) for v in (owner.get("command"), owner.get("job") and f"job {owner['job']}") if v)
    return f"pid {owner.get('pid', '?')}" + (f" ({what})" if what else "")


@contextlib.contextmanager
def output_lock(directory: Path, command: str, job: str | None = None, wait_s: float = 1.0) -> Iterator[Path]:
    """Holds `directory` (created if missing) for one writer: an exclusive flock on DIR/.lock, which
    records the holder (pid, command, job). Another holder, in this process or any other, makes it
    raise ConfigError naming the directory and the holder; a probe (lock_holder) is waited out for
    up to wait_s. The kernel drops the lock when the process ends, however it ends; the file stays."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _in_use(directory, "output directory", _describe_holder(path)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        owner = {"pid": os.getpid(), "command": command, **({"job": job} if job else {})}
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def read_config(directory: Path) -> dict[str, Any]:
    """A checkpoint directory's config.json, which names its family in "type"."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint directory ({CONFIG} missing)")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(values, dict) or "type" not in values:
        raise CheckpointError(f"{path}: no 'type' field naming the policy family")
    return values


def trained_max_delay(directory: Path) -> int:
    """The --max-delay a checkpoint was trained with (provenance.json's train_config): how many
    committed actions it continues; 0 for plain training or a checkpoint without provenance."""
    path = Path(directory) / PROVENANCE
    if not path.is_file():
        return 0
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: invalid JSON ({error})") from None
    return int(((values.get("train_config") or {}).get("max_delay")) or 0)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} missing")
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: unreadable ({error})") from None


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict that names every missing, unexpected or mis-shaped tensor."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source}: weights do not match the configuration: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, shape-mismatched {mismatched[:8]}")
    module.load_state_dict(state, strict=True)


def checkpoint_id(directory: Path) -> str:
    """<directory name>@<first 12 hex of a sha256 over its weight and config files>.

    Each file's name, then its bytes, in name order; streamed, as full-size weights are many GB."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.suffix in (".json", ".safetensors") and path.name != PROVENANCE:
            digest.update(path.name.encode())
            with path.open("rb") as file:
                while chunk := file.read(16 << 20):  # 16 MiB at a time
                    digest.update(chunk)
    return f"{Path(directory).name}@{digest.hexdigest()[:12]}"
