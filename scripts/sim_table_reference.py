#!/usr/bin/env python3
"""Trim a `snapflow sim-table` report into the reference that `snapflow sim-demo` prints beside its
own table (snapflow_ros/sim/sim_table_reference.json).

    scripts/sim_table_reference.py runs/sim-table/report.json --machine "2 CPU cores, 24 GB"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "snapflow_ros" / "sim" / "sim_table_reference.json"
KEPT = ("seeds", "episodes_per_seed", "pooled_rate", "pooled_ci95", "per_seed", "mean", "seed_half_width")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--machine", required=True, help="where it ran, in words")
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    settings = report["settings"]
    command = (f"snapflow sim-table, seeds {' '.join(map(str, settings['seeds']))}, {settings['eval_episodes']} "
               f"episodes per policy, task and seed, student {report['student']}")
    trimmed = {
        "command": command, "machine": args.machine, "alpha": report["alpha"], "settings": settings,
        "tasks": {task: {"seeds": entry["seeds"], "episodes_per_seed": entry["episodes_per_seed"],
                         "policies": {name: {k: s[k] for k in KEPT if k in s} for name, s in entry["policies"].items()},
                         "comparisons": entry["comparisons"]}
                  for task, entry in report["tasks"].items()},
    }
    args.output.write_text(json.dumps(trimmed, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
