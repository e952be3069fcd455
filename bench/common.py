"""What every bench script shares: the machine it ran on, medians, and the one JSON line it prints.

The development machine has 2 cores shared with other work, so no script reports an
absolute time as its result: each measures a ratio between two ways of doing the same work
within one run, with the repetitions interleaved (A B A B ...) so that a burst of load hits
both, and reports the median.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys


def load_average() -> float:
    """The 1-minute load average now (0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def machine() -> dict:
    """CPU count, load average and library versions: what a reader needs to weigh the numbers."""
    description = {
        "cpus": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
    }
    for name in ("torch", "transformers", "trl", "httpx"):
        module = sys.modules.get(name)
        if module is not None:
            description[name] = module.__version__
    return description


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(name: str, result: dict, summary: str) -> None:
    """Print the bench's JSON line (with the machine and the load seen at the end) and its summary line."""
    result = {"bench": name, **result, "machine": machine()}
    print(json.dumps(result), flush=True)
    print(f"{name}: {summary} (load average {result['machine']['load_average']})", flush=True)
