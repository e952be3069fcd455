"""The `hf` backend: `collect` time vs raw `model.generate` on the same prompts and batches, and scaling.

    .venv/bin/python bench/hf_overhead.py                    # ~2-3 minutes on 2 cores
    .venv/bin/python bench/hf_overhead.py --episodes 256 --batch 16 --in-flight 1 --scaling 1 16 64

Overhead: `collect` on math_single_agent with the tiny model (one-turn episodes, 32 new
tokens, greedy), `max_batch_size` = `--batch` and `rollout_concurrency` = `--in-flight` x
`--batch` (2 by default: while one batch generates, the episodes of the other step their envs,
so env work hides behind generate; 1 shows the cost of not overlapping). Each collect run
records the prompts its policy was sent; right after it, the same prompts, in full batches of
`--batch`, go through the tokenizer, `model.generate` and `decode` alone (the least any
toolkit must do). Runs alternate, and the ratio collect / raw is the median over the
repetitions. The collect time is the whole call: config, model load, env resets and steps,
records written; and batches the policy served smaller than `--batch` count against it.
Also given: the time from collect's first generate to the end of its last, over raw (the
per-episode overhead, without the fixed start-up cost of config and model loading).

Scaling: episodes/s of `collect` at each `--scaling` concurrency over concurrency 1, on the
same env, whose step (a regex and a math check) is cheap next to a generate.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import median, report

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the tiny model loses from intra-op threads on 2 cores
os.environ.setdefault("PETTINGLLMS_PROGRESS", "0")


def run_collect(
    concurrency: int, episodes: int, batches: list[list[str]] | None = None, in_flight: int = 1
) -> tuple[float, float]:
    """Seconds of one `collect`, and from its first generate's start to its last one's end.

    The prompt batches its policy formed are appended to `batches`.
    """
    from pettingllms.collect import collect
    from pettingllms.config import load_config
    from pettingllms.policies.hf import HFPolicy

    real = HFPolicy._generate_batch
    span = {"first": 0.0, "last": 0.0}

    def recording(self, prompts, sampling, seed):
        if batches is not None:
            batches.append(list(prompts))
        span["first"] = span["first"] or time.perf_counter()
        try:
            return real(self, prompts, sampling, seed)
        finally:
            span["last"] = time.perf_counter()

    HFPolicy._generate_batch = recording
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = load_config(
                [
                    "policy=hf",
                    "policy.max_tokens=32",
                    "policy.temperature=0",
                    f"policy.max_batch_size={concurrency}",
                    "env.name=math_single_agent",
                    "env.max_turns=1",
                    f"training.sft_num_episodes={episodes}",
                    f"training.rollout_concurrency={concurrency * in_flight}",
                    f"training.sft_data_dir={folder}",
                    "training.run_name=bench",
                ]
            )
            started = time.perf_counter()
            collect(config)
            return time.perf_counter() - started, span["last"] - span["first"]
    finally:
        HFPolicy._generate_batch = real


def load_raw_model():
    from pettingllms.models import load_causal_lm, load_tokenizer, resolve_model

    path = resolve_model(None)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return load_causal_lm(path, dtype="float32").eval(), tokenizer


def run_raw(model, tokenizer, prompts: list[str], batch: int, max_tokens: int) -> float:
    """Seconds to tokenize, generate (greedy) and decode `prompts` in full batches with transformers alone."""
    import torch

    started = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        inputs = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=640, help="episodes per run of the overhead figure")
    parser.add_argument("--scaling-episodes", type=int, default=128, help="episodes per run of the scaling figure")
    parser.add_argument("--batch", nargs="+", type=int, default=[16], help="batch sizes of the overhead figure")
    parser.add_argument("--in-flight", type=int, default=2, help="episodes in flight per batch slot (overhead figure)")
    parser.add_argument("--scaling", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.scaling_episodes, args.batch, args.scaling, args.repeats = 8, 8, [4], [1, 4], 1
    from pettingllms.console import quiet_libraries

    quiet_libraries()
    model, tokenizer = load_raw_model()
    run_collect(4, 4)  # warm up: imports, the task list, the math checker
    overhead = {}
    for batch in args.batch:
        ratios, serving_ratios, raw_s, served = [], [], [], []
        for _ in range(args.repeats):
            batches: list[list[str]] = []
            whole_s, serving_s = run_collect(batch, args.episodes, batches, args.in_flight)
            raw_s.append(run_raw(model, tokenizer, [prompt for b in batches for prompt in b], batch, 32))
            ratios.append(whole_s / raw_s[-1])
            serving_ratios.append(serving_s / raw_s[-1])
            served.append(sum(map(len, batches)) / len(batches))
        overhead[batch] = {
            "collect_over_raw": round(median(ratios), 3),
            "serving_over_raw": round(median(serving_ratios), 3),
            "policy_mean_batch": round(median(served), 2),
            "raw_generate_s": round(median(raw_s), 2),
        }
    speeds: dict[int, list[float]] = {}
    for _ in range(args.repeats):
        for concurrency in args.scaling:
            seconds = run_collect(concurrency, args.scaling_episodes)[0]
            speeds.setdefault(concurrency, []).append(args.scaling_episodes / seconds)
    base = median(speeds[args.scaling[0]])
    scaling = {
        c: {"episodes_per_s": round(median(v), 2), "speedup": round(median(v) / base, 2)} for c, v in speeds.items()
    }
    result = {
        "episodes": args.episodes,
        "in_flight": args.in_flight,
        "repeats": args.repeats,
        "overhead": overhead,
        "scaling": scaling,
    }
    summary = "; ".join(
        f"batch {b}: collect = {o['collect_over_raw']:.2f}x raw generate "
        f"({o['serving_over_raw']:.2f}x from the first generate to the last)"
        for b, o in overhead.items()
    )
    summary += "; " + ", ".join(f"concurrency {c}: {s['speedup']:.1f}x" for c, s in scaling.items())
    report("hf_overhead", result, summary)


if __name__ == "__main__":
    main()
