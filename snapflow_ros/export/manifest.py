"""manifest.json of an export directory: what the graphs take and give, and where they came from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from snapflow_ros.errors import CheckpointError

MANIFEST = "manifest.json"
FORMAT = "snapflow-onnx/1"
SERVED_GRAPHS = ("prefix", "expert")  # what the runtime backend loads; monolithic_<N> are optional


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    family: str
    source_checkpoint: str
    source_checkpoint_id: str        # directory@sha256 prefix of the exported weights
    chunk_size: int
    action_dim: int
    noise_dim: int
    steps: int                       # denoising steps to run (1 for a SnapFlow student)
    opset: int
    precision: str                   # "fp32" or "fp16"
    prefix_inputs: list[TensorSpec]
    cache: list[TensorSpec]          # prefix outputs = expert cache inputs, in order
    velocity: TensorSpec
    graphs: dict[str, str]           # role -> file: prefix, expert, monolithic_<N>
    processor: str = "processor"     # directory with the weight-free pre/post-processing
    # The expert takes t and s per action, (B, H): one graph serves plain chunks and chunks with
    # a committed prefix (False: an export from before per-action time, (B,)).
    per_action_time: bool = False
    max_delay: int = 0               # trained with committed prefixes of up to this many actions
    normalization: dict = field(default_factory=dict)  # feature -> statistic -> values (as applied)
    format: str = FORMAT
    torch_version: str = ""
    external_data: list[str] = field(default_factory=list)  # roles whose weights are in <file>.data
    notes: list[str] = field(default_factory=list)

    def check_files(self, directory: Path) -> None:
        """What serving loads is all there: the prefix and expert graphs (their external data too)
        and the processor; CheckpointError names what is missing."""
        directory = Path(directory)
        unnamed = [role for role in SERVED_GRAPHS if role not in self.graphs]
        if unnamed:
            raise CheckpointError(f"{directory / MANIFEST}: names no {' or '.join(unnamed)} graph")
        needed = [self.graphs[role] for role in SERVED_GRAPHS]
        needed += [f"{self.graphs[role]}.data" for role in SERVED_GRAPHS if role in self.external_data]
        missing = [name for name in needed if not (directory / name).is_file()]
        missing += [self.processor] if not (directory / self.processor).is_dir() else []
        if missing:
            raise CheckpointError(f"{directory}: incomplete export, {', '.join(missing)} missing "
                                  f"(listed in {MANIFEST})")

    def write(self, directory: Path) -> None:
        (Path(directory) / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"{directory}: not a snapflow export ({MANIFEST} missing)")
        values = json.loads(path.read_text())
        if values.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {values.get('format')!r}, expected {FORMAT!r}")
        for key in ("prefix_inputs", "cache"):
            values[key] = [TensorSpec(**spec) for spec in values[key]]
        values["velocity"] = TensorSpec(**values["velocity"])
        return cls(**values)
