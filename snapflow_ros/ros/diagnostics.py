"""The policy node's diagnostic_msgs/DiagnosticStatus (what diagnostic_updater would build)."""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


def node_status(name: str, policy, backend: str, hold_reason: str, held: bool, latencies_ms: list[float],
                input_ages_s: dict[str, float], counters: dict[str, int],
                last_swap_error: str = "") -> DiagnosticStatus:
    if held:
        level, message = DiagnosticStatus.WARN, "held by ~/hold"
    elif hold_reason:
        level, message = DiagnosticStatus.WARN, f"holding: {hold_reason}"
    else:
        level, message = DiagnosticStatus.OK, "publishing chunks"
    values = {"policy_id": policy.policy_id, "backend": backend, "denoising_steps": policy.steps,
              "hold_reason": hold_reason, "held": held, "last_swap_error": last_swap_error, **counters}
    if latencies_ms:
        for q in (50, 95, 99):
            values[f"inference_latency_p{q}_ms"] = f"{np.percentile(latencies_ms, q):.3f}"
    values |= {f"input_age_s.{k}": f"{v:.3f}" for k, v in input_ages_s.items()}
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id="snapflow_ros",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
