"""The code sandbox: `run_python` vs a bare interpreter start on the same program.

    .venv/bin/python bench/sandbox.py                        # ~1 minute on 2 cores
    .venv/bin/python bench/sandbox.py --runs 40 --parallel 8

Both run `print(sum(range(1000)))`: `pettingllms.sandbox.run_python` (work folder, limits,
namespaces where the machine allows them, a launcher) and a bare `python -s -P -c` of the same
code, the least any sandbox built on a fresh interpreter can cost. Runs alternate; each figure
is the median of (sandbox seconds / bare seconds):

- `cold`: the launcher pool is emptied before each run, so the run starts its own launcher
  (a second interpreter start), as the first run of a collector does;
- `sequential`: one run at a time in steady state: the run takes a launcher started ahead of
  time (see `settle`), and the pool starts the next one in the background;
- `parallel`: `--parallel` runs in flight at once (threads, as the rollout runner's episodes
  call it), the pool holding that many ready launchers first.

A launcher started ahead of time still costs CPU, only off the caller's path:
`cpu_ms_per_run` is the CPU time (ours and our children's) of back-to-back sequential runs,
per run, next to the bare one's. On a machine whose cores are all busy, that, not the
latency, bounds how many programs run per second.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import median, report

from pettingllms import sandbox

CODE = "print(sum(range(1000)))"
_SETTLE_S = 0.5


def sandboxed() -> None:
    result = sandbox.run_python(CODE)
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


def warm_up(parallel: int) -> None:
    """Imports, the interpreter's files in the page cache, and a pool that has seen `parallel`
    runs at once."""
    for _ in range(3):
        timed(sandboxed, parallel)
    bare()


def settle(parallel: int) -> None:
    """Wait until the pool holds `parallel` launchers and they are done isolating themselves
    (about 0.1-0.3 s each here), so that neither the sandbox nor the bare run that follows
    shares the CPU with launchers still starting: their cost is in `cpu_ms_per_run`."""
    deadline = time.monotonic() + 30
    while sandbox._launcher_pool().idle_count() < parallel and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(_SETTLE_S)


def empty_pool(parallel: int) -> None:
    """End every waiting launcher, so that the next run must start its own."""
    sandbox._launcher_pool().close()


def compare(parallel: int, runs: int, before) -> dict:
    """Median ratio of `runs` interleaved sandbox and bare timings, `before(parallel)` first."""
    ratios, sandbox_s, bare_s = [], [], []
    for _ in range(runs):
        before(parallel)
        sandbox_s.append(timed(sandboxed, parallel))
        before(parallel)
        bare_s.append(timed(bare, parallel))
        ratios.append(sandbox_s[-1] / bare_s[-1])
    return {
        "in_flight": parallel,
        "sandbox_over_bare": round(median(ratios), 2),
        "sandbox_ms": round(1000 * median(sandbox_s), 1),
        "bare_ms": round(1000 * median(bare_s), 1),
    }


def cpu_ms_per_run(run, runs: int) -> float:
    """CPU time of this process and its reaped children per run, background launchers included
    (the pool is closed at the end, so that every launcher it started is counted)."""

    def cpu_s() -> float:
        mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime

    sandbox._launcher_pool().close()
    before = cpu_s()
    for _ in range(runs):
        run()
    sandbox._launcher_pool().close()
    return round(1000 * (cpu_s() - before) / runs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="alternating pairs per setting")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.parallel = 2, 2
    warm_up(1)
    result = {"runs": args.runs}
    result["cold"] = compare(1, args.runs, before=empty_pool)
    warm_up(1)
    result["sequential"] = compare(1, args.runs, before=settle)
    warm_up(args.parallel)
    result["parallel"] = compare(args.parallel, args.runs, before=settle)
    cpu_runs = 2 * args.runs
    result["cpu_ms_per_run"] = {"sandbox": cpu_ms_per_run(sandboxed, cpu_runs), "bare": cpu_ms_per_run(bare, cpu_runs)}
    summary = (
        f"run_python = {result['sequential']['sandbox_over_bare']:.2f}x a bare interpreter one at a time "
        f"({result['cold']['sandbox_over_bare']:.2f}x when it must start its own launcher), "
        f"{result['parallel']['sandbox_over_bare']:.2f}x with {args.parallel} in flight; "
        f"CPU {result['cpu_ms_per_run']['sandbox']} vs {result['cpu_ms_per_run']['bare']} ms per run"
    )
    report("sandbox", result, summary)


if __name__ == "__main__":
    main()
