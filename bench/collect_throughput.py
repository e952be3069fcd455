"""Collection throughput: episodes per second by env, policy and rollout concurrency.

    .venv/bin/python bench/collect_throughput.py                 # all cases
    .venv/bin/python bench/collect_throughput.py --episodes 64 --envs sokoban --policies hf

Each case is a fresh `collect` into a temporary folder; the table goes to stdout, so it can
be pasted into bench/RESULTS.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from pettingllms.collect import collect
from pettingllms.config import load_config


def measure(env: str, policy: str, concurrency: int, episodes: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        overrides = [
            f"env.name={env}",
            f"policy={policy}",
            f"training.sft_num_episodes={episodes}",
            f"training.rollout_concurrency={concurrency}",
            f"training.sft_data_dir={folder}",
            "training.run_name=bench",
        ]
        if policy == "hf":
            overrides += ["policy.max_tokens=32", "env.max_turns=1"]
        started = time.perf_counter()
        stats = collect(load_config(overrides)).stats
        elapsed = time.perf_counter() - started
    turns = stats["total_records"]
    return {
        "env": env,
        "policy": policy,
        "concurrency": concurrency,
        "episodes": stats["total_episodes"],
        "seconds": round(elapsed, 2),
        "episodes_per_s": round(stats["total_episodes"] / elapsed, 2),
        "turns_per_s": round(turns / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--envs", nargs="+", default=["sokoban", "math_env"])
    parser.add_argument("--policies", nargs="+", default=["expert", "hf"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    args = parser.parse_args()
    os.environ.setdefault("PETTINGLLMS_PROGRESS", "0")
    print("| env | policy | concurrency | episodes | seconds | episodes/s | turns/s |")
    print("|---|---|---|---|---|---|---|")
    for env in args.envs:
        for policy in args.policies:
            for concurrency in args.concurrency:
                row = measure(env, policy, concurrency, args.episodes)
                print("| " + " | ".join(str(value) for value in row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
