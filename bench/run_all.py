"""Run every bench script and write bench/RESULTS.md: one table, and the machine it ran on.

    .venv/bin/python bench/run_all.py                        # ~10-15 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick --output /tmp/RESULTS.md   # seconds: checks the scripts run

Each script runs in its own process at its default sizes and prints one JSON line; this
script turns those lines into the table. Everything in RESULTS.md below the line
`<!-- kept by run_all -->` is kept as it was (notes and older measurements).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from common import machine

HERE = Path(__file__).parent
SCRIPTS = ("openai_client", "hf_overhead", "sandbox", "memory", "train")
KEPT = "<!-- kept by run_all -->"


def run_script(name: str, quick: bool) -> dict:
    """The JSON line `bench/<name>.py` printed (its summary line is echoed)."""
    command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode:
        raise SystemExit(f"bench/{name}.py failed (exit code {output.returncode}):\n{output.stderr[-3000:]}")
    lines = output.stdout.strip().splitlines()
    print(lines[-1], flush=True)
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def rows_of(results: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, load average) rows for the table."""
    rows = []
    if "openai_client" in results:
        r = results["openai_client"]
        for row in r["rows"]:
            c = row["concurrency"]
            rows.append(
                (
                    f"openai client, {c} in flight, server {r['delay_s']} s",
                    f"policy {row['policy_vs_ideal']:.2f} / collect {row['collect_vs_ideal']:.2f} of ideal "
                    f"({row['ideal_rps']:.0f} req/s)",
                    ">= 0.95 at 64" if c == 64 else "",
                    r["machine"]["load_average"],
                )
            )
            rows.append(
                (
                    f"openai client, {c} in flight, server without delay",
                    f"policy {row['policy_vs_bare']:.2f} / collect {row['collect_vs_bare']:.2f} of a bare "
                    f"httpx client ({row['fast_bare_rps']:.0f} req/s); collect "
                    f"{row['collect_cpu_ms_per_request']:.1f} ms CPU per episode",
                    ">= 0.9 (policy)",
                    r["machine"]["load_average"],
                )
            )
    if "hf_overhead" in results:
        r = results["hf_overhead"]
        for batch, o in r["overhead"].items():
            rows.append(
                (
                    f"hf collect vs raw generate, batch {batch}, {int(batch) * r.get('in_flight', 1)} in flight",
                    f"{o['collect_over_raw']:.2f}x the time",
                    "<= 1.15x",
                    r["machine"]["load_average"],
                )
            )
        scaling = ", ".join(f"{c}: {s['speedup']:.1f}x" for c, s in r["scaling"].items())
        rows.append(("hf collect, episodes/s by concurrency", scaling, ">= 5x at 16", r["machine"]["load_average"]))
    if "sandbox" in results:
        r = results["sandbox"]
        for label in ("sequential", "parallel"):
            s = r[label]
            rows.append(
                (
                    f"sandbox run_python vs bare python, {s['in_flight']} in flight",
                    f"{s['sandbox_over_bare']:.2f}x the time ({s['sandbox_ms']:.0f} vs {s['bare_ms']:.0f} ms)",
                    "<= 1.3x" if label == "sequential" else "",
                    r["machine"]["load_average"],
                )
            )
        if "cold" in r:
            c, cpu = r["cold"], r["cpu_ms_per_run"]
            rows.append(
                (
                    "sandbox run_python, no launcher ready (first call)",
                    f"{c['sandbox_over_bare']:.2f}x the time; CPU per run {cpu['sandbox']:.0f} vs {cpu['bare']:.0f} ms",
                    "",
                    r["machine"]["load_average"],
                )
            )
    if "memory" in results:
        r = results["memory"]
        rows.append(
            (
                f"peak RSS, expert collection of {r['small_episodes']} vs {r['large_episodes']} episodes",
                f"{r['large_over_small']:.2f}x ({r['small_peak_rss_mb']:.0f} vs {r['large_peak_rss_mb']:.0f} MB)",
                "",
                r["machine"]["load_average"],
            )
        )
    if "train" in results:
        r = results["train"]
        rows.append(
            (
                f"train real tokens/s vs padded HF Trainer (batch {r['batch']}, {r['steps']} steps)",
                f"{r['ours_over_baseline']:.2f}x; padding {100 * r['ours_padding_share']:.0f}% of our batches vs "
                f"{100 * r['baseline_padding_share']:.0f}% (max_length {r['baseline_max_length']}); random batches "
                f"{r['ungrouped_over_baseline']:.2f}x, {100 * r['ungrouped_padding_share']:.0f}% padding",
                ">= 2x",
                r["machine"]["load_average"],
            )
        )
    return [tuple(str(value) for value in row) for row in rows]


def render(results: dict[str, dict], kept: str) -> str:
    about = machine()
    versions = ", ".join(
        f"{name} {about[name]}" for name in ("python", "torch", "transformers", "trl") if name in about
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run_all.py` on {datetime.date.today().isoformat()}: {about['cpus']} CPUs, "
        f"load average {about['load_average']} at the end; {versions}.",
        "Every figure is a ratio measured within one run (repetitions interleaved, medians); the",
        "load column is the 1-minute load average each script saw when it finished.",
        "",
        "| figure | measured | target | load |",
        "|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows_of(results)),
        "",
        "Raw results (one JSON line per script):",
        "",
        *(f"    {json.dumps(result)}" for result in results.values()),
        "",
        KEPT,
    ]
    return "\n".join(lines) + kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every script runs")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    import torch  # noqa: F401 - for the versions in the machine description
    import transformers  # noqa: F401
    import trl  # noqa: F401

    results = {name: run_script(name, args.quick) for name in args.only}
    output = Path(args.output)
    previous = output.read_text(encoding="utf-8") if output.exists() else ""
    kept = previous.split(KEPT, 1)[1] if KEPT in previous else ""
    output.write_text(render(results, kept), encoding="utf-8")
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
