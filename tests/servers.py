"""Servers for the `openai` backend's tests: a real one and a faulty one, both on 127.0.0.1.

- `transformers_serve(model_dir, work_dir)` runs `transformers serve` (the real
  OpenAI-compatible server of transformers) on the tiny model in a subprocess, offline,
  with its Hugging Face cache in `work_dir`, and kills its whole process group afterwards.
- `FaultyServer` answers in OpenAI format with a fixed reply, and fails on purpose: 429,
  500, 400, broken JSON, a 200 whose JSON is not a completion, hanging past the client's
  timeout, sending its answer one byte at a time (each byte inside the read timeout, the
  whole far beyond it), closing the connection without a word or halfway through the body,
  or a body that claims a gzip encoding it does not have; on a schedule, or with a seeded
  probability. It counts requests and the most it ever had open at once, so tests can check
  retries, spreading and bounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
FAULTS = (
    "429",
    "500",
    "408",
    "400",
    "308",
    "bad_json",
    "malformed",
    "hang",
    "trickle",
    "drop",
    "truncated",
    "bad_gzip",
)
TRANSIENT_FAULTS = ("429", "500", "408", "hang", "drop", "bad_json", "malformed", "truncated")
"""Faults a client should retry."""
ABSENT = object()
"""`usage=ABSENT`: answers carry no usage block at all."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(model_dir: Path, work_dir: Path, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """Run `transformers serve MODEL_DIR` on a free port and yield its base URL (`.../v1`).

    The model folder is the server's forced model (preloaded, used for every request), and
    requests name it by its path. The server runs in its own session so that killing its
    process group at the end leaves nothing behind.
    """
    port = free_port()
    hub_cache = work_dir / "hf_home" / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)  # /v1/models answers 500 when the cache folder is missing
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(work_dir / "hf_home"), HF_HUB_CACHE=str(hub_cache))
    # Without continuous batching the server runs each open request's generate in its own
    # thread; with torch's default thread count per call they fight over the cores, and 20
    # episodes take ten times longer on a 2-core machine.
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
    ]
    log_path = work_dir / "transformers_serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(f"http://{HOST}:{port}", process, log_path, startup_timeout_s)
        yield f"http://{HOST}:{port}/v1"
    finally:
        stop_process_group(process)


def wait_until_healthy(root_url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll `/health` until it answers 200; fail with the server's log if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root_url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"transformers serve did not answer /health within {timeout_s}s:\n{tail(log_path)}")


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it lingers; reap the process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class FaultyServer:
    """An OpenAI-compatible server with failures on order.

    Args:
        schedule: outcomes of the first requests, in arrival order: "ok" or one of FAULTS.
        failure_rate: after the schedule, the chance that a request fails with one of
            `faults`. The draw is seeded by `seed`, the request body and how many times that
            body was seen, so a retry of the same request draws anew and a whole run fails
            the same way every time, however its requests interleave.
        faults: the faults drawn from.
        retry_after: value of the Retry-After header sent with 429, 500 and 408 answers.
        hang_s: how long "hang" holds a request before closing it unanswered, and how long
            "trickle" goes on.
        delay_s: time every answer takes (so that requests overlap).
        reply: the assistant text of every answer (chat mode: None sends `"content": null`).
        message_extra: more fields for the chat answer's message (`tool_calls`, `refusal`...).
        usage: the usage block of every answer: "count" counts words, ABSENT leaves it out,
            anything else is sent as it is.
        malformed_body: what a "malformed" answer sends with its 200: bytes as they are,
            anything else as JSON.
        model: the one model `/v1/models` lists (None: it lists none).
    """

    def __init__(
        self,
        schedule: list[str] = (),
        failure_rate: float = 0.0,
        faults: tuple[str, ...] = TRANSIENT_FAULTS,
        seed: int = 0,
        retry_after: str | None = None,
        hang_s: float = 10.0,
        delay_s: float = 0.0,
        reply: str | None = 'Actions: ["Up"]',
        message_extra: dict[str, Any] | None = None,
        usage: Any = "count",
        malformed_body: Any = None,
        model: str | None = "faulty-model",
    ):
        self.schedule = list(schedule)
        self.failure_rate, self.faults, self.seed = failure_rate, tuple(faults), seed
        self.retry_after, self.hang_s, self.delay_s = retry_after, hang_s, delay_s
        self.reply, self.message_extra, self.usage, self.model = reply, dict(message_extra or {}), usage, model
        self.malformed_body = {"object": "chat.completion", "choices": []} if malformed_body is None else malformed_body
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.log: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._times_seen: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/v1"

    @property
    def outcomes(self) -> list[str]:
        """What each request got, in arrival order."""
        return [entry["outcome"] for entry in self.log]

    def start(self) -> FaultyServer:
        self._server = _QuietThreadingServer((HOST, 0), _FaultyHandler)
        self._server.faulty = self
        # A short poll interval: shutdown() waits up to one interval, and tests start many servers.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()  # hung handlers return now
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def choose_outcome(self, path: str, headers: dict[str, str], body: bytes) -> str:
        """Record the request and decide what it gets."""
        with self.lock:
            index = len(self.log)
            digest = hashlib.sha256(body).hexdigest()
            seen = self._times_seen[digest] = self._times_seen.get(digest, 0) + 1
            if index < len(self.schedule):
                outcome = self.schedule[index]
            else:
                draw = random.Random(f"{self.seed}:{digest}:{seen}")
                outcome = draw.choice(self.faults) if draw.random() < self.failure_rate else "ok"
            self.log.append({"path": path, "headers": headers, "body": body, "outcome": outcome})
            return outcome

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count the request as open while the block runs."""
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI-format JSON for a successful request to `path`."""
        if path.endswith("/models"):
            listed = [{"id": self.model, "object": "model", "owned_by": "tests"}] if self.model else []
            return {"object": "list", "data": listed}
        if path.endswith("/chat/completions"):
            message = {"role": "assistant", "content": self.reply, **self.message_extra}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": self.reply, "finish_reason": "stop"}
            kind = "text_completion"
        answer = {
            "id": f"cmpl-{len(self.log)}",
            "object": kind,
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [choice],
        }
        if self.usage == "count":
            usage = {
                "prompt_tokens": len(json.dumps(body).split()),
                "completion_tokens": len((self.reply or "").split()),
            }
            answer["usage"] = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        elif self.usage is not ABSENT:
            answer["usage"] = self.usage
        return answer


class _QuietThreadingServer(ThreadingHTTPServer):
    """Threads that never block shutdown, and no tracebacks for clients that hung up."""

    daemon_threads = True
    block_on_close = False
    faulty: FaultyServer

    def handle_error(self, request, client_address) -> None:
        pass


class _FaultyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _QuietThreadingServer

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, raw_body: bytes) -> None:
        faulty = self.server.faulty
        outcome = faulty.choose_outcome(self.path, dict(self.headers), raw_body)
        with faulty.counting():
            if faulty.delay_s:
                time.sleep(faulty.delay_s)
            if outcome == "trickle":
                self._trickle()
                return
            if outcome == "truncated":
                self._truncate(raw_body)
                return
            if outcome in ("hang", "drop"):
                if outcome == "hang":
                    faulty.released.wait(faulty.hang_s)
                self._hang_up()
                return
            self._respond(outcome, raw_body)

    def _respond(self, outcome: str, raw_body: bytes) -> None:
        faulty = self.server.faulty
        if outcome == "ok":
            body = json.loads(raw_body) if raw_body else {}
            self._send(200, json.dumps(faulty.answer(self.path, body)).encode())
        elif outcome == "bad_json":
            self._send(200, b"{this is not json")
        elif outcome == "malformed":
            malformed = faulty.malformed_body
            self._send(200, malformed if isinstance(malformed, bytes) else json.dumps(malformed).encode())
        elif outcome == "308":
            self._send(308, b"", {"Location": "https://elsewhere.example/v1" + self.path.removeprefix("/v1")})
        elif outcome == "bad_gzip":
            self._send(200, b"these bytes are not gzip", headers={"Content-Encoding": "gzip"})
        elif outcome == "400":
            self._send(
                400,
                json.dumps(
                    {"error": {"message": "max_tokens is too large for this model", "type": "invalid_request_error"}}
                ).encode(),
            )
        else:
            status = int(outcome)
            message = {429: "Too many requests", 408: "Request timed out"}.get(status, "Internal error")
            retry_after = {} if faulty.retry_after is None else {"Retry-After": faulty.retry_after}
            self._send(status, json.dumps({"object": "error", "message": message}).encode(), retry_after)

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _truncate(self, raw_body: bytes) -> None:
        """Promise the whole answer, send its first half, and close the connection."""
        body = json.loads(raw_body) if raw_body else {}
        payload = json.dumps(self.server.faulty.answer(self.path, body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self._hang_up()

    def _trickle(self, every_s: float = 0.1) -> None:
        """Promise a long answer and send a space every `every_s`, until `hang_s` is over."""
        faulty = self.server.faulty
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        deadline = time.monotonic() + faulty.hang_s
        while time.monotonic() < deadline and not faulty.released.wait(every_s):
            self.wfile.write(b" ")
        self._hang_up()

    def _hang_up(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass
