"""What a benchmark records of the machine it ran on."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (figures vary by CPU: every figure is printed with it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def record_run(results: Path, line: dict, started: float) -> None:
    """Print one run's JSON line, with its seconds (since ``started``, a
    ``time.perf_counter()``), the CPU and the date, and append it to ``results``."""
    line = {**line, "seconds": round(time.perf_counter() - started, 1), "cpu": cpu_model(),
            "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(line), flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
