"""The JSON-lines channel of `--progress-format json`: one object per stdout line, keyed "event".

    {"event": "resumed", "step": 400, "checkpoint": "runs/x/checkpoints/step-00000400"}
    {"event": "progress", "step": 440, "total_steps": 2000, "loss": 0.31, ...}
    {"event": "done", "student": "runs/x/policy"}
    {"event": "error", "type": "BagError", "message": "bag ...: topic ... not found"}

A job server (snapflow_distill.jobs) reads progress, outcome and failure from here instead of
parsing human text. Standard library only: the parent that reads it need not import torch.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from typing import IO, Union


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of the trainer (snapflow_distill.trainer reports these)."""

    step: int
    total_steps: int
    loss: float
    loss_flow_matching: float
    loss_consistency: float
    learning_rate: float
    steps_per_second: float
    eta_seconds: float

    @classmethod
    def from_fields(cls, values: dict) -> ProgressEvent:
        """From a dict with at least these fields; extra ones (a newer trainer's) are dropped."""
        converted = {}
        for f in fields(cls):
            value = values[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{f.name}: {value!r} is not a number")
            converted[f.name] = int(value) if f.type == "int" else float(value)
        return cls(**converted)


@dataclass(frozen=True)
class ResumedEvent:
    """The run continues from a periodic checkpoint of an earlier run (killed, failed) at this step."""

    step: int
    checkpoint: str


@dataclass(frozen=True)
class DoneEvent:
    """The command finished; the paths it wrote (whichever apply)."""

    student: str | None = None
    teacher: str | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """The command failed: the exception's class name and its message (written for users)."""

    type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorEvent:
        return cls(type(error).__name__, str(error) or repr(error))


Event = Union[ProgressEvent, ResumedEvent, DoneEvent, ErrorEvent]
_NAMES: dict[type, str] = {ProgressEvent: "progress", ResumedEvent: "resumed", DoneEvent: "done",
                           ErrorEvent: "error"}


def to_line(event: Event) -> str:
    body = {k: v for k, v in asdict(event).items() if v is not None}
    # NaN/inf are not JSON: written as null so any JSON reader takes the line.
    body = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in body.items()}
    return json.dumps({"event": _NAMES[type(event)], **body})


def emit(event: Event, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    print(to_line(event), file=stream, flush=True)


def parse_line(line: str) -> Event | None:
    """The event on one line, or None for anything else (a human print, garbage, an unknown
    or malformed event): the channel is shared with whatever else the command prints."""
    try:
        body = json.loads(line)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    kind = body.get("event")
    try:
        if kind == "progress":
            nan = float("nan")  # a non-finite value arrives as null
            return ProgressEvent.from_fields({k: nan if v is None else v for k, v in body.items()})
        if kind == "resumed":
            step = body["step"]
            if isinstance(step, bool) or not isinstance(step, int):
                raise TypeError(f"step: {step!r} is not an integer")
            return ResumedEvent(step, str(body["checkpoint"]))
        if kind == "done":
            return DoneEvent(**{f.name: _text(body.get(f.name)) for f in fields(DoneEvent)})
        if kind == "error":
            return ErrorEvent(str(body["type"]), str(body["message"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
