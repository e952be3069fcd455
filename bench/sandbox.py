"""The code sandbox: `run_python` vs a bare interpreter start on the same program.

    .venv/bin/python bench/sandbox.py                        # ~1 minute on 2 cores
    .venv/bin/python bench/sandbox.py --runs 40 --parallel 8

Both run `print(sum(range(1000)))`: `pettingllms.sandbox.run_python` (work folder, limits,
namespaces where the machine allows them, a launcher) and a bare `python -s -P -c` of the same
code, the least any sandbox built on a fresh interpreter can cost. Runs alternate; the
figure is the median of (sandbox seconds / bare seconds), one at a time and with `--parallel`
in flight at once (threads, as the rollout runner's episodes call it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import median, report

CODE = "print(sum(range(1000)))"


def sandboxed() -> None:
    from pettingllms.sandbox import run_python

    result = run_python(CODE)
    assert result.stdout.strip() == "499500", result


def bare() -> None:
    output = subprocess.run([sys.executable, "-s", "-P", "-c", CODE], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "499500", output


def timed(run, parallel: int) -> float:
    """Seconds to do `parallel` runs at once (one run when `parallel` is 1)."""
    started = time.perf_counter()
    if parallel == 1:
        run()
    else:
        with ThreadPoolExecutor(parallel) as pool:
            for future in [pool.submit(run) for _ in range(parallel)]:
                future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="alternating pairs per setting")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.parallel = 2, 2
    sandboxed(), bare()  # warm up: imports, the uid pool, the interpreter's files in the page cache
    result = {"runs": args.runs}
    for label, parallel in (("sequential", 1), ("parallel", args.parallel)):
        ratios, sandbox_s, bare_s = [], [], []
        for _ in range(args.runs):
            sandbox_s.append(timed(sandboxed, parallel))
            bare_s.append(timed(bare, parallel))
            ratios.append(sandbox_s[-1] / bare_s[-1])
        result[label] = {
            "in_flight": parallel,
            "sandbox_over_bare": round(median(ratios), 2),
            "sandbox_ms": round(1000 * median(sandbox_s), 1),
            "bare_ms": round(1000 * median(bare_s), 1),
        }
    summary = (
        f"run_python = {result['sequential']['sandbox_over_bare']:.2f}x a bare interpreter one at a time, "
        f"{result['parallel']['sandbox_over_bare']:.2f}x with {args.parallel} in flight"
    )
    report("sandbox", result, summary)


if __name__ == "__main__":
    main()
