"""Memory: peak RSS of an expert collection of N episodes vs 10 N, each in its own process.

    .venv/bin/python bench/memory.py                         # ~2-3 minutes on 2 cores
    .venv/bin/python bench/memory.py --episodes 300 3000          # quicker

Each collection (`policy=expert`, `--env`, only successful episodes kept) runs in a fresh
subprocess, and `os.wait4` gives that child's own peak RSS, so the runs do not see each
other's. A collection that streams its episodes to disk should grow far less than the 10x
in episodes; the figure is peak(large) / peak(small), and the growth per 1,000 episodes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from common import median, report

CHILD = """
import os, sys
os.environ["PETTINGLLMS_PROGRESS"] = "0"
from pettingllms.collect import collect
from pettingllms.config import load_config
collect(load_config(sys.argv[1:]))
"""


def peak_rss_mb(env: str, episodes: int) -> float:
    """Peak resident memory, in MB, of a subprocess collecting `episodes` expert episodes."""
    with tempfile.TemporaryDirectory() as folder:
        overrides = [
            "policy=expert",
            f"env.name={env}",
            f"training.sft_num_episodes={episodes}",
            f"training.sft_data_dir={folder}",
            "training.run_name=bench",
        ]
        process = subprocess.Popen([sys.executable, "-c", CHILD, *overrides], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise SystemExit(f"the collection of {episodes} episodes failed with exit code {process.returncode}")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="math_single_agent")
    parser.add_argument("--episodes", nargs=2, type=int, default=[1000, 10000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    if args.quick:
        args.episodes = [5, 50]
    small, large = args.episodes
    peaks: dict[int, list[float]] = {small: [], large: []}
    for _ in range(args.repeats):
        for episodes in (small, large):
            peaks[episodes].append(peak_rss_mb(args.env, episodes))
    small_mb, large_mb = median(peaks[small]), median(peaks[large])
    result = {
        "env": args.env,
        "small_episodes": small,
        "large_episodes": large,
        "small_peak_rss_mb": round(small_mb, 1),
        "large_peak_rss_mb": round(large_mb, 1),
        "large_over_small": round(large_mb / small_mb, 3),
        "mb_per_1000_episodes": round(1000 * (large_mb - small_mb) / (large - small), 2),
    }
    summary = (
        f"{small} episodes: {small_mb:.0f} MB, {large} episodes: {large_mb:.0f} MB peak RSS "
        f"({result['large_over_small']:.2f}x for {large // small}x the episodes)"
    )
    report("memory", result, summary)


if __name__ == "__main__":
    main()
