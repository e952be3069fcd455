"""The `openai` client: requests/s against a server of fixed latency, vs the ideal and vs a bare client.

    .venv/bin/python bench/openai_client.py                  # ~4-5 minutes on 2 cores
    .venv/bin/python bench/openai_client.py --delay 0.5 --repeats 1   # ~1 minute

A raw asyncio HTTP server (a subprocess, so its CPU is not ours) answers OpenAI chat
completions after a fixed delay. Two of them run: a slow one (`--delay`, the server is the
limit: the ideal is `concurrency / delay` requests/s) and a fast one (no delay: the client is
the limit, and a bare `httpx.AsyncClient` posting the same body shows the ceiling). Three
clients take turns at each concurrency, repetitions interleaved:

- bare: `httpx.AsyncClient` with a semaphore, the least a Python client can do;
- policy: `OpenAIPolicy.generate` alone (the client-only path);
- collect: `pettingllms.collect.collect` on math_single_agent, one-turn episodes (the
  realistic path: prompts, env steps, records written).

Reported: medians of requests/s, the ratios policy/ideal and policy/bare (collect likewise),
and the toolkit's CPU seconds per episode in `collect` (process_time / episodes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import httpx
from common import median, report

REPLY = {
    "id": "bench",
    "object": "chat.completion",
    "model": "x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "So \\boxed{42}."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46},
}
MESSAGES = [{"role": "user", "content": "What is 6 times 7? Put the answer in \\boxed{}."}]


# ---------------------------------------------------------------- the server (a subprocess)


async def serve(port: int, delay_s: float) -> None:
    """Answer every POST with REPLY after `delay_s`, keep-alive, HTTP/1.1; GET /stats gives our CPU time."""
    body = json.dumps(REPLY).encode()
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET /stats"):
                    stats = json.dumps({"cpu_s": time.process_time(), "served": served}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(stats), stats))
                    continue
                if delay_s:
                    await asyncio.sleep(delay_s)
                served += 1
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def start_server(delay_s: float) -> tuple[subprocess.Popen, str]:
    """The server in a subprocess, and its base URL."""
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(delay_s)], stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}/v1"


def server_cpu_s(base_url: str) -> float:
    return httpx.get(base_url.removesuffix("/v1") + "/stats").json()["cpu_s"]


# ---------------------------------------------------------------- the three clients


async def bare_client(base_url: str, concurrency: int, requests: int) -> None:
    """The least a client can do: one pooled AsyncClient, a semaphore, the body posted, the JSON read."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    body = {"model": "x", "messages": MESSAGES, "max_tokens": 32, "temperature": 0.0}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one() -> None:
            async with semaphore:
                response = await client.post(base_url + "/chat/completions", json=body)
                response.json()["choices"][0]["message"]["content"]

        await asyncio.gather(*(one() for _ in range(requests)))


async def policy_client(base_url: str, concurrency: int, requests: int) -> None:
    from pettingllms.policies.base import GenerationRequest, SamplingParams
    from pettingllms.policies.openai import OpenAIPolicy

    policy = OpenAIPolicy("bench", [base_url], model="x", max_concurrency=concurrency)
    sampling = SamplingParams(temperature=0.0, max_tokens=32)
    try:
        await asyncio.gather(*(policy.generate(GenerationRequest(MESSAGES, sampling)) for _ in range(requests)))
    finally:
        await policy.close()


def collect_client(base_url: str, concurrency: int, episodes: int) -> int:
    from pettingllms.collect import collect
    from pettingllms.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(
            [
                "policy=openai",
                f"policy.base_url={base_url}",
                "policy.model=x",
                f"policy.max_concurrency={concurrency}",
                "env.name=math_single_agent",
                "env.max_turns=1",
                f"training.sft_num_episodes={episodes}",
                f"training.rollout_concurrency={concurrency}",
                f"training.sft_data_dir={folder}",
                "training.run_name=bench",
            ]
        )
        return collect(config).stats["total_episodes"]


def run_case(client: str, base_url: str, concurrency: int, requests: int) -> tuple[float, float]:
    """(requests per second, client CPU seconds per request) of one run."""
    cpu, started = time.process_time(), time.perf_counter()
    if client == "collect":
        requests = collect_client(base_url, concurrency, requests)
    else:
        asyncio.run((bare_client if client == "bare" else policy_client)(base_url, concurrency, requests))
    elapsed = time.perf_counter() - started
    return requests / elapsed, (time.process_time() - cpu) / requests


# ---------------------------------------------------------------- the bench


def measure(args: argparse.Namespace) -> dict:
    clients = ("bare", "policy", "collect")
    slow, slow_url = start_server(args.delay)
    fast, fast_url = start_server(0.0)
    rates: dict = {}
    cpu: dict = {}
    try:
        # Warm up once: imports, the env's task list, the math checker, connections.
        for client in clients:
            run_case(client, fast_url, 8, 16)
        server_cpu_before, fast_requests = server_cpu_s(fast_url), 0
        for _ in range(args.repeats):
            for concurrency in args.concurrency:
                for server, url, requests in (
                    ("slow", slow_url, args.waves * concurrency),
                    ("fast", fast_url, max(args.fast_requests, 2 * concurrency)),
                ):
                    for client in clients:
                        rate, cpu_per_request = run_case(client, url, concurrency, requests)
                        rates.setdefault((server, client, concurrency), []).append(rate)
                        cpu.setdefault((server, client, concurrency), []).append(cpu_per_request)
                        fast_requests += requests if server == "fast" else 0
        server_cpu_per_request = (server_cpu_s(fast_url) - server_cpu_before) / fast_requests
    finally:
        for process in (slow, fast):
            process.kill()
            process.wait()
    rows = []
    for concurrency in args.concurrency:
        ideal = concurrency / args.delay
        row = {"concurrency": concurrency, "ideal_rps": round(ideal, 1)}
        for server in ("slow", "fast"):
            for client in clients:
                row[f"{server}_{client}_rps"] = round(median(rates[(server, client, concurrency)]), 1)
        for client in ("policy", "collect"):
            row[f"{client}_vs_ideal"] = round(row[f"slow_{client}_rps"] / ideal, 3)
            row[f"{client}_vs_bare"] = round(row[f"fast_{client}_rps"] / row["fast_bare_rps"], 3)
            row[f"{client}_cpu_ms_per_request"] = round(1000 * median(cpu[("fast", client, concurrency)]), 3)
        row["bare_cpu_ms_per_request"] = round(1000 * median(cpu[("fast", "bare", concurrency)]), 3)
        rows.append(row)
    return {
        "delay_s": args.delay,
        "repeats": args.repeats,
        "server_cpu_ms_per_request": round(1000 * server_cpu_per_request, 3),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=2.0, help="the slow server's latency in seconds")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[8, 64, 256])
    parser.add_argument("--waves", type=int, default=3, help="requests per slow run = waves x concurrency")
    parser.add_argument("--fast-requests", type=int, default=300, help="requests per run on the fast server")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(0, args.serve))
        return
    if args.quick:
        args.delay, args.concurrency, args.waves, args.fast_requests, args.repeats = 0.05, [8], 2, 32, 1
    os.environ.setdefault("PETTINGLLMS_PROGRESS", "0")
    result = measure(args)
    at = {row["concurrency"]: row for row in result["rows"]}
    summary = "; ".join(
        f"c={c}: policy {row['policy_vs_ideal']:.2f} of ideal, {row['policy_vs_bare']:.2f} of bare; "
        f"collect {row['collect_vs_ideal']:.2f} of ideal, {row['collect_vs_bare']:.2f} of bare, "
        f"{row['collect_cpu_ms_per_request']:.2f} ms CPU/episode"
        for c, row in at.items()
    )
    report("openai_client", result, f"delay {args.delay}s; {summary}")


if __name__ == "__main__":
    main()
