"""The `openai` backend: any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, hosted APIs).

Two ways to ask for a reply:

- `chat` mode posts the messages to `/v1/chat/completions` and the server applies the
  model's chat template. Works everywhere, hosted APIs included.
- `completions` mode renders the chat template here, with the model's own tokenizer, and
  posts the text to `/v1/completions`. The rendered text is returned as
  `Generation.prompt_text`, so the text trained on later is exactly the text the model saw
  (this is how vLLM-based RL systems talk to their servers).

    >>> policy = OpenAIPolicy("teacher", ["https://api.example.com/v1"], model="big-model",
    ...                       api_key_env="EXAMPLE_API_KEY")
    >>> policy = OpenAIPolicy("shared_model", ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"],
    ...                       model="Qwen/Qwen3-1.7B", mode="completions")
    >>> generation = await policy.generate(GenerationRequest(messages))

A long collection must survive a flaky server, so requests are bounded (`max_concurrency`
in flight), time-limited (connect and read timeouts, plus a whole-attempt deadline so a
server that trickles bytes cannot stall a run), and retried with exponential backoff and
jitter on 429, 408, 5xx, timeouts, connection errors (a body cut off included) and answers
that are not a completion: invalid JSON, no choices or no text, or a 200 that carries an
`error` object (a server on a bad day sends all of these; a server's `Retry-After` is
honoured, up to a cap). When the retries run out the request raises
`PolicyError(kind, message)`; the runner records that episode as an error of that kind and
goes on. Other 4xx answers are the caller's mistake, a redirect means a wrong base URL, and
a reply the server turned into tool calls has lost its text: none of these is retried.
`TRANSIENT_ERROR_KINDS` says which kinds are worth running again later.

The API key is read from the environment variable named by `api_key_env` and only ever
goes into the Authorization header; without the variable no header is sent, which local
servers accept.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import random
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from pettingllms.exceptions import ConfigError, ModelNotFoundError, PolicyError
from pettingllms.policies.base import Generation, GenerationRequest, Policy
from pettingllms.policies.openai_answers import (
    AttemptFailed,
    first_listed_model,
    parse_generation,
    parse_retry_after,
    read_answer,
)

if TYPE_CHECKING:
    from pettingllms.config import PolicyConfig

logger = logging.getLogger(__name__)
Result = TypeVar("Result")

MODES = ("chat", "completions")
BALANCES = ("least_in_flight", "round_robin")
ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions"}
# Every `PolicyError.kind` this backend raises is one of these 5 transient kinds or 3 permanent ones.
# Transient: the infrastructure failed, and the same episode may well succeed when run again later.
#   timeout       no answer within the timeouts, or HTTP 408
#   connection    refused, reset, or dropped before the whole body came
#   http_429      rate limited (also a 200 whose `error` says code 429)
#   http_5xx      the server failed (also a 200 whose `error` has no 4xx code)
#   bad_response  a 200 that is not a completion: invalid JSON or encoding, no choices, no text, wrong types
# Permanent: the same request would fail the same way; fix the request, the config or the server first.
#   http_4xx         the request was refused (400 bad request, 401/403 key, 404 model...; also a 200 whose
#                    `error` says so)
#   http_3xx         the server redirects: the base URL is wrong
#   tool_call_reply  the server's tool-call parser took the reply's text; start it without one
TRANSIENT_ERROR_KINDS: frozenset[str] = frozenset({"timeout", "connection", "http_429", "http_5xx", "bad_response"})
"""The PolicyError kinds worth running the episode again for (see the comment above)."""
CONNECTIONS_PER_CLIENT = 8
"""Connections in one httpx client's pool; `max_concurrency` is spread over as many clients as needed.

httpcore's pool looks at every connection and every waiting request each time a request
starts or ends, so one pool of N connections costs O(N) per request: with one client,
requests/s fell from 188 at 8 in flight to 75 at 64 and 27 at 256 (bench/openai_client.py,
fast server), while 8 clients of 8 connections served 64 in flight at 2.2x that rate."""


@dataclass
class RetryPolicy:
    """When and how long to wait before trying a failed request again.

    Waits grow as `backoff_base_s * 2**(retry - 1)`, capped at `backoff_max_s`, times a random
    factor in [0.5, 1] so that many episodes failing together do not retry in lockstep. A
    server that says `Retry-After` knows best and is obeyed, up to `retry_after_max_s`.
    """

    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0

    def delay_s(self, retry: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.retry_after_max_s)
        backoff = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        return backoff * rng.uniform(0.5, 1.0)


class ServerPool:
    """Spreads requests over several servers of the same model.

    `least_in_flight` sends each request to the server with the fewest requests open (ties
    taken in turn), which keeps a slow server from collecting a queue; `round_robin` simply
    takes them in turn. A retry avoids the server that just failed when there is another.
    """

    def __init__(self, base_urls: list[str], balance: str = "least_in_flight"):
        self.base_urls = list(base_urls)
        self.balance = balance
        self.in_flight = dict.fromkeys(self.base_urls, 0)
        self._turn = 0

    def pick(self, avoid: str | None = None) -> str:
        """The server for the next attempt."""
        candidates = [url for url in self.base_urls if url != avoid] or self.base_urls
        start = self._turn % len(candidates)
        self._turn += 1
        rotated = candidates[start:] + candidates[:start]
        if self.balance == "round_robin":
            return rotated[0]
        return min(rotated, key=self.in_flight.__getitem__)

    @contextmanager
    def use(self, avoid: str | None = None) -> Iterator[str]:
        """Pick a server and count the attempt as in flight on it until the block ends."""
        url = self.pick(avoid)
        self.in_flight[url] += 1
        try:
            yield url
        finally:
            self.in_flight[url] -= 1


class OpenAIPolicy(Policy):
    """Replies from OpenAI-compatible servers, over HTTP, bounded and retried.

    Args:
        name: the `policy_name` written into records.
        base_urls: server URLs such as `http://127.0.0.1:8000/v1` (a URL without a path gets
            `/v1`); requests are spread across them.
        model: the model name the servers know; None asks the first server's `/v1/models`
            once and takes the first model listed.
        mode: "chat" or "completions" (see the module docstring).
        tokenizer_path: completions mode: the tokenizer whose chat template renders the
            prompt, a local folder or a Hub id already in the cache; None = `model`.
        api_key_env: environment variable holding the API key; unset = no auth header.
        max_concurrency: most requests in flight at once, over all servers.
        timeout_s: read timeout of one attempt (the whole attempt also ends after
            connect_timeout_s + timeout_s).
        connect_timeout_s: connect timeout of one attempt.
        retry: when to retry and how long to wait.
        enable_thinking: None, or the reasoning switch given to the chat template
            (`chat_template_kwargs` in chat mode, applied here in completions mode).
        balance: "least_in_flight" or "round_robin" over `base_urls`.
        extra_body: more fields for every request body, for server-specific options
            (e.g. vLLM's `{"add_special_tokens": False}` in completions mode).
        seed: seeds the backoff jitter.
    """

    def __init__(
        self,
        name: str,
        base_urls: list[str],
        model: str | None = None,
        *,
        mode: str = "chat",
        tokenizer_path: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 32,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        enable_thinking: bool | None = None,
        balance: str = "least_in_flight",
        extra_body: dict[str, Any] | None = None,
        seed: int = 0,
    ):
        super().__init__(name)
        check_settings(name, base_urls, mode, balance, max_concurrency, retry or RetryPolicy())
        self.pool = ServerPool([normalize_base_url(url) for url in base_urls], balance)
        self.model = model
        self.mode = mode
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry or RetryPolicy()
        self.enable_thinking = enable_thinking
        self.extra_body = dict(extra_body or {})
        self._rng = random.Random(seed)
        self.tokenizer = None
        if mode == "completions":
            self.tokenizer = load_chat_tokenizer(name, tokenizer_path or model)
        # The clients, semaphore and lock belong to one event loop; they are made inside it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._free_slots: collections.deque[httpx.AsyncClient] = collections.deque()
        self._semaphore: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None

    @classmethod
    def from_config(cls, name: str, config: PolicyConfig) -> OpenAIPolicy:
        """The policy a `policy.*` (or `policies.<name>.*`) config section describes."""
        base_urls = list(config.base_urls) or ([config.base_url] if config.base_url else [])
        return cls(
            name,
            base_urls,
            config.model,
            mode=config.mode,
            tokenizer_path=config.model_path,
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            retry=RetryPolicy(max_retries=config.max_retries),
            enable_thinking=config.enable_thinking,
            balance=config.balance,
            extra_body=config.extra_body,
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        """Ask a server for one reply; raise PolicyError once the retries are spent."""
        self._bind_to_running_loop()
        model = await self.model_name()
        body, prompt_text = self.build_body(request, model)
        read = functools.partial(parse_generation, mode=self.mode, prompt_text=prompt_text)
        async with self._semaphore:
            return await self.send_with_retries("POST", ENDPOINTS[self.mode], body, read)

    def build_body(self, request: GenerationRequest, model: str) -> tuple[dict[str, Any], str | None]:
        """The request body for `request`, and the prompt text when it was rendered here."""
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        prompt_text = None
        if self.mode == "completions":
            prompt_text = self.render_prompt(request.messages)
            body["prompt"] = prompt_text
        else:
            body["messages"] = request.messages
            if self.enable_thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": self.enable_thinking}
        body.update(self.extra_body)
        return body, prompt_text

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat template applied to `messages`, ending where the assistant's reply begins."""
        options = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **options)

    async def model_name(self) -> str:
        """`model`, or the first model the server lists (asked once, then remembered)."""
        if self.model is not None:
            return self.model
        self._bind_to_running_loop()
        async with self._model_lock:
            if self.model is None:
                model = await self.send_with_retries("GET", "/models", None, first_listed_model)
                if model is None:
                    raise ConfigError(
                        f"policy '{self.name}': the server lists no models at /v1/models "
                        "(transformers serve lists only its Hub cache); set policy.model=NAME."
                    )
                self.model = model
        return self.model

    async def send_with_retries(
        self, method: str, path: str, body: dict[str, Any] | None, read: Callable[[dict[str, Any]], Result]
    ) -> Result:
        """One request, retried on transient failures; what `read` makes of the answer's JSON, or PolicyError.

        `read` raises AttemptFailed when the answer is not what was asked for; that is a failed
        attempt like any other, so a server that sends a broken answer now and then costs a
        retry, not the episode.
        """
        self._bind_to_running_loop()
        failed_url = None
        for attempt in range(self.retry.max_retries + 1):
            with self.pool.use(avoid=failed_url) as base_url:
                try:
                    return read(await self.send_once(method, base_url + path, body))
                except AttemptFailed as error:
                    failure, failed_url = error, base_url
            if not failure.retryable or attempt == self.retry.max_retries:
                break
            delay = self.retry.delay_s(attempt + 1, failure.retry_after_s, self._rng)
            logger.debug("%s %s failed (%s); retry %d in %.2fs", method, path, failure, attempt + 1, delay)
            await asyncio.sleep(delay)
        tries = f"{attempt + 1} attempt{'s' if attempt else ''}" if failure.retryable else "not retried"
        raise PolicyError(failure.kind, f"policy '{self.name}': {method} {failed_url}{path}: {failure} ({tries})")

    async def send_once(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange; its JSON answer, or AttemptFailed saying what went wrong."""
        slot = self._free_slots.popleft() if self._free_slots else None
        client = slot or self._clients[0]
        try:
            async with asyncio.timeout(self.connect_timeout_s + self.timeout_s):
                response = await client.request(method, url, json=body)
        except (httpx.TimeoutException, TimeoutError) as error:
            raise AttemptFailed(
                "timeout",
                f"timed out ({type(error).__name__}; connect {self.connect_timeout_s}s, read {self.timeout_s}s)",
                True,
            ) from None
        except httpx.TransportError as error:
            # A body cut off before its Content-Length is a RemoteProtocolError: the connection dropped.
            raise AttemptFailed("connection", f"{type(error).__name__}: {error}", True) from None
        except httpx.DecodingError as error:
            raise AttemptFailed("bad_response", f"the answer's body does not decode: {error}", True) from None
        finally:
            if slot is not None:
                self._free_slots.append(slot)
        return read_answer(response, self._missing_key_hint())

    def _missing_key_hint(self) -> str:
        if self.api_key_env is None:
            return " (no API key was sent: set policy.api_key_env to the variable that holds it)"
        if os.environ.get(self.api_key_env):
            return ""
        return f" (no API key was sent: environment variable {self.api_key_env} is not set)"

    def _bind_to_running_loop(self) -> None:
        """Make the clients, semaphore and lock for the running event loop, once per loop.

        An httpx client's connections and an asyncio semaphore belong to the loop they were
        first used in; a policy reused under a new `asyncio.run` gets fresh ones.
        """
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._clients = self._make_clients()
        # One entry per connection: an attempt takes a client with a free connection, in O(1).
        # The semaphore keeps the attempts in flight within the entries; the one attempt that
        # may come on top (asking /v1/models) uses the first client's spare connection.
        self._free_slots = collections.deque(client for _ in range(CONNECTIONS_PER_CLIENT) for client in self._clients)
        while len(self._free_slots) > self.max_concurrency:
            self._free_slots.pop()
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        self._model_lock = asyncio.Lock()

    def _make_clients(self) -> list[httpx.AsyncClient]:
        """Enough httpx clients of CONNECTIONS_PER_CLIENT connections for `max_concurrency` (see there)."""
        headers = {}
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Waiting for a pool connection is bounded by the semaphore, not by a timeout.
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s, pool=None)
        size = min(self.max_concurrency, CONNECTIONS_PER_CLIENT)
        limits = httpx.Limits(max_connections=size + 1, max_keepalive_connections=size)
        count = -(-self.max_concurrency // size)
        return [
            httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, verify=shared_ssl_context())
            for _ in range(count)
        ]

    async def close(self) -> None:
        """Close the HTTP clients (their connections); a later `generate` makes new ones."""
        if self._clients and self._loop is asyncio.get_running_loop():
            await asyncio.gather(*(client.aclose() for client in self._clients))
        self._clients, self._loop = [], None
        self._free_slots.clear()


def check_settings(
    name: str, base_urls: list[str], mode: str, balance: str, max_concurrency: int, retry: RetryPolicy
) -> None:
    """Raise ConfigError for settings that cannot work, naming the policy and what is accepted."""
    where = f"policy '{name}' (backend openai)"
    if not base_urls:
        raise ConfigError(
            f"{where} needs a server: set policy.base_url=http://HOST:PORT/v1 (or policy.base_urls=[...] for several)."
        )
    if mode not in MODES:
        raise ConfigError(f"{where}: mode={mode!r} is invalid; expected one of {', '.join(MODES)}.")
    if balance not in BALANCES:
        raise ConfigError(f"{where}: balance={balance!r} is invalid; expected one of {', '.join(BALANCES)}.")
    if max_concurrency < 1:
        raise ConfigError(f"{where}: max_concurrency={max_concurrency} is invalid; expected an integer > 0.")
    if retry.max_retries < 0:
        raise ConfigError(f"{where}: max_retries={retry.max_retries} is invalid; expected an integer >= 0.")
    for url in base_urls:
        if not is_http_url(url):
            # Else httpx refuses it on every request, and every episode ends as an error.
            example = normalize_base_url(f"http://{url.strip()}") if "://" not in url else "http://HOST:PORT/v1"
            raise ConfigError(f"{where}: base_url {url!r} is not an http(s) URL: write {example}.")


def is_http_url(url: str) -> bool:
    """Whether `url` is http(s)://HOST[:PORT][/PATH] with a port that is a number in range."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default SSL context, made once: making one reads the CA bundle, slow on cold disks."""
    return httpx.create_ssl_context()


def normalize_base_url(url: str) -> str:
    """`url` without a trailing slash; a bare `http://host:port` gets the usual `/v1`."""
    url = url.strip().rstrip("/")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


def load_chat_tokenizer(policy_name: str, path: str | None):
    """The tokenizer that renders prompts in completions mode; it must have a chat template."""
    if path is None:
        raise ConfigError(
            f"policy '{policy_name}': completions mode renders the chat template here and needs the "
            "model's tokenizer: set policy.model_path=FOLDER_OR_HUB_ID (or policy.model)."
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFoundError(
            f"Could not load the tokenizer {path!r} for completions mode: {first_line}. "
            "Give a local folder or a Hub id already downloaded (`hf download ID`)."
        ) from error
    if tokenizer.chat_template is None:
        raise ModelNotFoundError(f"Tokenizer {path!r} has no chat template; completions mode needs one.")
    return tokenizer


__all__ = [
    "TRANSIENT_ERROR_KINDS",
    "OpenAIPolicy",
    "RetryPolicy",
    "ServerPool",
    "normalize_base_url",
    "parse_retry_after",
]
