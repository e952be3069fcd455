"""Reading an OpenAI-compatible server's answer: what is a completion, what is a failure, and of which kind.

Pure functions over an `httpx.Response` or its JSON, used by `pettingllms.policies.openai`; each
failure is an `AttemptFailed` that says whether trying again may help.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from pettingllms.policies.base import Generation

ERROR_TEXT_LIMIT = 500
"""Characters of a server's error body kept in a PolicyError message."""


class AttemptFailed(Exception):
    """One HTTP attempt that did not give a usable answer; `retryable` says whether to try again."""

    def __init__(self, kind: str, message: str, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def read_answer(response: httpx.Response, unauthorized_hint: str = "") -> dict[str, Any]:
    """The JSON object of a successful answer; AttemptFailed (retryable or not) for anything else."""
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("location", "an address it does not give")
        raise AttemptFailed(
            "http_3xx", f"HTTP {status}: the server redirects to {where}; set policy.base_url to where it points", False
        )
    if status >= 400:
        hint = unauthorized_hint if status in (401, 403) else ""
        retry_after_s = parse_retry_after(response.headers.get("retry-after"))
        raise failure_for_status(status, f"HTTP {status}: {error_text(response)}{hint}", retry_after_s)
    try:
        payload = response.json()
    except ValueError:  # UnicodeDecodeError included
        raise AttemptFailed("bad_response", f"HTTP {status} with invalid JSON: {response.text[:200]!r}", True) from None
    if not isinstance(payload, dict):
        raise AttemptFailed("bad_response", f"HTTP {status} with a JSON {type(payload).__name__}, not an object", True)
    if payload.get("error"):
        raise failure_in_answer(payload["error"])
    return payload


def failure_for_status(status: int, message: str, retry_after_s: float | None = None) -> AttemptFailed:
    """What an HTTP error status means: 429, 408 and 5xx are a server's bad moment; other 4xx, the request's fault."""
    if status == 429:
        return AttemptFailed("http_429", message, True, retry_after_s)
    if status == 408:
        return AttemptFailed("timeout", message, True, retry_after_s)
    if status >= 500:
        return AttemptFailed("http_5xx", message, True, retry_after_s)
    return AttemptFailed("http_4xx", message, False)


def failure_in_answer(error: Any) -> AttemptFailed:
    """A 200 that says it failed: OpenRouter answers so once a model has started, with the status as `error.code`.

    A code that is an HTTP error status decides as that status would; without one it is the
    server's failure, and retried.
    """
    code = error.get("code") if isinstance(error, dict) else None
    status = int(code) if str(code).isdecimal() and 400 <= int(code) < 600 else 500
    text = error.get("message") if isinstance(error, dict) else None
    label = f" (code {code})" if code is not None else ""
    return failure_for_status(status, f"HTTP 200 with an error{label}: {str(text or error)[:ERROR_TEXT_LIMIT]}")


def error_text(response: httpx.Response) -> str:
    """The server's own words about an error: OpenAI, vLLM and FastAPI each put them elsewhere."""
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:ERROR_TEXT_LIMIT] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:ERROR_TEXT_LIMIT]
        for key in ("message", "detail", "error"):
            if payload.get(key):
                return str(payload[key])[:ERROR_TEXT_LIMIT]
    return str(payload)[:ERROR_TEXT_LIMIT]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def parse_generation(payload: dict[str, Any], mode: str, prompt_text: str | None) -> Generation:
    """The Generation in a chat or completions answer; AttemptFailed when the answer holds none."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AttemptFailed("bad_response", f"HTTP 200 with no choices: {str(payload)[:200]}", True)
    choice = choices[0]
    if choice.get("error") or choice.get("finish_reason") == "error":  # OpenRouter: the model failed midway
        raise failure_in_answer(choice.get("error") or "the reply ended with finish_reason 'error'")
    text = choice.get("text") if mode == "completions" else chat_reply_text(choice.get("message"))
    if not isinstance(text, str):
        raise AttemptFailed("bad_response", f"HTTP 200 with no reply text: {str(choice)[:200]}", True)
    finish_reason = choice.get("finish_reason")
    return Generation(
        text=text,
        prompt_text=prompt_text,
        prompt_tokens=token_count(payload.get("usage"), "prompt_tokens"),
        completion_tokens=token_count(payload.get("usage"), "completion_tokens"),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
    )


def chat_reply_text(message: Any) -> str | None:
    """The assistant's text in a chat answer; None when the message has none of the right type.

    `content` is null for an empty reply (some servers), for a refusal (whose text is then the
    reply) and for tool calls. A reply parsed into tool calls has lost its text, even when some
    of it is left in `content`: that is AttemptFailed("tool_call_reply"), not an empty reply.

    A server started with a reasoning parser (vLLM `--reasoning-parser`, SGLang) moves the
    thinking out of `content` into `reasoning_content` (or `reasoning`); it is put back in
    front as a <think> block, so the record keeps what the model wrote and the training
    stage decides whether to keep or strip it.
    """
    if not isinstance(message, dict):
        return None
    if message.get("tool_calls") or message.get("function_call"):
        raise AttemptFailed(
            "tool_call_reply",
            "HTTP 200 with tool calls instead of the reply's text: the server parses tool calls out of replies; "
            "start it without a tool-call parser (vLLM: without --enable-auto-tool-choice)",
            False,
        )
    content = message.get("content")
    if content is None:
        refusal = message.get("refusal")
        content = refusal if isinstance(refusal, str) else ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if not isinstance(content, str) or (reasoning and not isinstance(reasoning, str)):
        return None
    if reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{content}"
    return content


def token_count(usage: Any, key: str) -> int:
    """A count from the answer's `usage` block; 0 when the block or the count is missing or not a count.

    Usage is bookkeeping: a server that leaves it out or garbles it has still given the reply.
    """
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def first_listed_model(payload: dict[str, Any]) -> str | None:
    """The first model id in a `/v1/models` answer; None when the list is empty; AttemptFailed when there is none."""
    listed = payload.get("data")
    if not isinstance(listed, list):
        raise AttemptFailed("bad_response", f"HTTP 200 with no model list: {str(payload)[:200]}", True)
    ids = [entry.get("id") for entry in listed if isinstance(entry, dict)]
    return next((model for model in ids if isinstance(model, str) and model), None)
