"""Where benchmarks write: one JSON file per benchmark in bench-results/.

Each file holds the measured numbers, the machine, and the ratios the README
quotes; ratios are measured side by side in one run because this machine is
shared and noisy. `python -m tests.benchmarks.results` prints a summary table.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


def write_result(name: str, data: dict, summary: list[str]) -> Path:
    """Store one benchmark's numbers and its human summary lines."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "summary": summary,
        "data": data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\n[{name}]\n  " + "\n  ".join(summary))
    return path


def summary_markdown() -> str:
    lines = ["# Benchmark results", ""]
    for path in sorted(RESULTS.glob("*.json")):
        payload = json.loads(path.read_text())
        lines.append(f"## {payload['benchmark']} ({payload['measured_at']}, {payload['machine']['cpus']} CPUs)")
        lines += [f"- {line}" for line in payload["summary"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = summary_markdown()
    (RESULTS / "SUMMARY.md").write_text(text)
    print(text)
