"""The policy node's diagnostic_msgs/DiagnosticStatus (what diagnostic_updater would build)."""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


def node_status(name: str, policy, backend: str, hold_reason: str, held: bool, timings_ms: dict[str, list[float]],
                input_ages_s: dict[str, float], counters: dict[str, int],
                last_swap_error: str = "") -> DiagnosticStatus:
    """timings_ms: name -> recent values in ms, reported as <name>_p50_ms, _p95_ms, _p99_ms."""
    if policy is None:
        level, message = DiagnosticStatus.WARN, f"not configured{': ' + hold_reason if hold_reason else ''}"
    elif held:
        level, message = DiagnosticStatus.WARN, "held by ~/hold"
    elif hold_reason:
        level, message = DiagnosticStatus.WARN, f"holding: {hold_reason}"
    else:
        level, message = DiagnosticStatus.OK, "publishing chunks"
    values = {"policy_id": getattr(policy, "policy_id", ""), "backend": backend,
              "denoising_steps": getattr(policy, "steps", 0),
              "hold_reason": hold_reason, "held": held, "last_swap_error": last_swap_error, **counters}
    for timing, recent in timings_ms.items():
        for q in (50, 95, 99) if recent else ():
            values[f"{timing}_p{q}_ms"] = f"{np.percentile(recent, q):.3f}"
    values |= {f"input_age_s.{k}": f"{v:.3f}" for k, v in input_ages_s.items()}
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id="snapflow_ros",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
