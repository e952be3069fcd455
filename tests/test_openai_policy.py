"""The `openai` backend against a local server that fails on purpose (tests/servers.py).

Retries, Retry-After, timeouts, error kinds, spreading over servers and the concurrency
bound are checked on the wire: the server counts what it really received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (no __init__.py there), so the helpers import by name.
from servers import ABSENT, FaultyServer, free_port

from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.exceptions import ConfigError, PolicyError
from pettingllms.policies import GenerationRequest, SamplingParams
from pettingllms.policies.openai import (
    TRANSIENT_ERROR_KINDS,
    OpenAIPolicy,
    RetryPolicy,
    ServerPool,
    normalize_base_url,
    parse_retry_after,
)

MESSAGES = [{"role": "system", "content": "You move boxes."}, {"role": "user", "content": "Which move?"}]
FAST_RETRY = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)


def make_policy(*servers: FaultyServer | str, **settings) -> OpenAIPolicy:
    urls = [server if isinstance(server, str) else server.base_url for server in servers]
    settings.setdefault("retry", FAST_RETRY)
    settings.setdefault("model", "faulty-model")
    return OpenAIPolicy("test", urls, timeout_s=settings.pop("timeout_s", 5.0), **settings)


def generate(policy: OpenAIPolicy, count: int = 1, sampling: SamplingParams | None = None) -> list:
    """Run `count` concurrent requests in a fresh event loop; close the policy after."""

    async def main():
        try:
            requests = [GenerationRequest(MESSAGES, sampling or SamplingParams(max_tokens=8)) for _ in range(count)]
            return await asyncio.gather(*(policy.generate(request) for request in requests))
        finally:
            await policy.close()

    return asyncio.run(main())


def failure_of(policy: OpenAIPolicy) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        generate(policy)
    return caught.value


def test_a_healthy_server_gives_text_usage_and_finish_reason():
    with FaultyServer() as server:
        [generation] = generate(make_policy(server))
    assert generation.text == 'Actions: ["Up"]'
    assert generation.prompt_tokens > 0 and generation.completion_tokens == 2
    assert generation.finish_reason == "stop" and generation.prompt_text is None


def test_transient_failures_are_retried_until_success():
    faults = ["429", "500", "408", "drop", "bad_json", "malformed", "truncated", "bad_gzip"]
    with FaultyServer(schedule=faults) as server:
        [generation] = generate(make_policy(server, retry=RetryPolicy(len(faults), 0.01, 0.05)))
    assert generation.text == 'Actions: ["Up"]'
    assert server.outcomes == [*faults, "ok"]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("429", "http_429"),
        ("500", "http_5xx"),
        ("408", "timeout"),
        ("drop", "connection"),
        ("truncated", "connection"),
        ("hang", "timeout"),
        ("bad_json", "bad_response"),
        ("malformed", "bad_response"),
        ("bad_gzip", "bad_response"),
    ],
)
@pytest.mark.slow
def test_the_error_kind_after_the_last_retry(fault, kind):
    with FaultyServer(schedule=[fault] * 3, hang_s=5.0) as server:
        error = failure_of(make_policy(server, retry=RetryPolicy(2, 0.01), timeout_s=0.3))
    assert error.kind == kind and kind in TRANSIENT_ERROR_KINDS
    assert len(server.log) == 3 and "3 attempts" in str(error)
    assert "policy 'test'" in str(error) and server.base_url in str(error)


NOT_A_COMPLETION = [
    b"{this is not json",
    b"",
    b'{"choices": [{"message": {"content": "cut off',
    ["a", "list"],
    {},
    {"object": "chat.completion", "choices": []},
    {"choices": "none"},
    {"choices": [None]},
    {"choices": [{"finish_reason": "stop"}]},
    {"choices": [{"message": "just a string"}]},
    {"choices": [{"message": {"role": "assistant", "content": 5}}]},
    {"choices": [{"message": {"role": "assistant", "content": ["parts"]}}]},
]


@pytest.mark.parametrize("body", NOT_A_COMPLETION, ids=[str(body)[:40] for body in NOT_A_COMPLETION])
@pytest.mark.slow
def test_a_200_that_is_not_a_completion_is_retried_like_a_5xx(body):
    with FaultyServer(schedule=["malformed"] * 2, malformed_body=body) as server:
        [generation] = generate(make_policy(server))
    assert generation.text == 'Actions: ["Up"]' and generation.completion_tokens == 2
    assert server.outcomes == ["malformed", "malformed", "ok"]


def test_a_200_that_is_not_a_completion_without_retries_is_a_bad_response():
    with FaultyServer(schedule=["malformed"]) as server:
        error = failure_of(make_policy(server, retry=RetryPolicy(max_retries=0)))
    assert error.kind == "bad_response" and len(server.log) == 1
    assert "no choices" in str(error) and "1 attempt" in str(error)


@pytest.mark.slow  # loads transformers for the tokenizer
def test_a_completions_answer_without_text_is_retried():
    from pettingllms.tiny_model import tiny_model_path

    body = {"object": "text_completion", "choices": [{"index": 0, "text": None, "finish_reason": "stop"}]}
    with FaultyServer(schedule=["malformed"], malformed_body=body) as server:
        [generation] = generate(make_policy(server, mode="completions", tokenizer_path=str(tiny_model_path())))
    assert generation.text == 'Actions: ["Up"]' and server.outcomes == ["malformed", "ok"]


@pytest.mark.parametrize(
    ("error_body", "kind", "retried"),
    [
        ({"error": {"code": 502, "message": "Upstream model is down"}}, "http_5xx", True),
        ({"error": {"message": "The server is overloaded", "type": "server_error", "code": None}}, "http_5xx", True),
        ({"error": "Upstream model is down"}, "http_5xx", True),
        ({"error": {"code": 429, "message": "Rate limit exceeded upstream"}}, "http_429", True),
        ({"error": {"code": "400", "message": "prompt is too long for this model"}}, "http_4xx", False),
        ({"error": {"code": "²", "message": "Upstream model is down"}}, "http_5xx", True),
        (
            {"choices": [{"message": {"content": "cut"}, "finish_reason": "error", "error": {"code": 502}}]},
            "http_5xx",
            True,
        ),
    ],
)
def test_an_error_inside_a_200_is_classified_by_its_code(error_body, kind, retried):
    with FaultyServer(schedule=["malformed"] * 2, malformed_body=error_body) as server:
        error = failure_of(make_policy(server, retry=RetryPolicy(1, 0.01)))
    assert error.kind == kind and (kind in TRANSIENT_ERROR_KINDS) == retried
    assert len(server.log) == (2 if retried else 1) and ("not retried" in str(error)) != retried
    assert "HTTP 200 with an error" in str(error)
    if not retried:
        assert "prompt is too long for this model" in str(error)


def test_a_null_content_is_an_empty_reply():
    with FaultyServer(reply=None) as server:
        [generation] = generate(make_policy(server))
    assert generation.text == "" and generation.finish_reason == "stop" and len(server.log) == 1


def test_a_refusal_is_the_reply():
    with FaultyServer(reply=None, message_extra={"refusal": "I can't help with that."}) as server:
        [generation] = generate(make_policy(server))
    assert generation.text == "I can't help with that."


def test_a_reply_turned_into_tool_calls_is_an_error_not_an_empty_reply():
    tool_calls = [{"id": "call_0", "type": "function", "function": {"name": "move", "arguments": '{"to": "Up"}'}}]
    with FaultyServer(reply=None, message_extra={"tool_calls": tool_calls}) as server:
        error = failure_of(make_policy(server))
    assert error.kind == "tool_call_reply" and error.kind not in TRANSIENT_ERROR_KINDS
    assert "tool calls" in str(error) and "not retried" in str(error) and len(server.log) == 1


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        (ABSENT, (0, 0)),
        (None, (0, 0)),
        ([], (0, 0)),
        ("12 tokens", (0, 0)),
        ({"prompt_tokens": "7", "completion_tokens": None}, (7, 0)),
        ({"prompt_tokens": -3, "completion_tokens": 2.0}, (0, 2)),
        ({"prompt_tokens": True, "completion_tokens": 2.5}, (0, 0)),
        ({"prompt_tokens": "²", "completion_tokens": "3"}, (0, 3)),
        ({"prompt_tokens": float("inf"), "completion_tokens": {"n": 1}}, (0, 0)),
    ],
)
def test_a_missing_or_malformed_usage_never_costs_the_reply(usage, tokens):
    with FaultyServer(usage=usage) as server:
        [generation] = generate(make_policy(server))
    assert generation.text == 'Actions: ["Up"]' and len(server.log) == 1
    assert (generation.prompt_tokens, generation.completion_tokens) == tokens


def test_a_redirect_is_not_retried_and_names_where_it_points():
    with FaultyServer(schedule=["308"]) as server:
        error = failure_of(make_policy(server))
    assert error.kind == "http_3xx" and error.kind not in TRANSIENT_ERROR_KINDS and len(server.log) == 1
    assert "https://elsewhere.example/v1/chat/completions" in str(error) and "policy.base_url" in str(error)


def test_a_models_listing_that_is_not_a_list_is_retried():
    with FaultyServer(schedule=["malformed"], malformed_body={"data": "served-model"}, model="served-model") as server:
        [generation] = generate(make_policy(server, model=None))
    assert generation.text == 'Actions: ["Up"]'
    assert [entry["path"] for entry in server.log] == ["/v1/models", "/v1/models", "/v1/chat/completions"]


def test_a_400_is_not_retried_and_its_text_is_kept():
    with FaultyServer(schedule=["400"]) as server:
        error = failure_of(make_policy(server))
    assert error.kind == "http_4xx"
    assert "HTTP 400" in str(error) and "max_tokens is too large for this model" in str(error)
    assert "not retried" in str(error) and len(server.log) == 1


def test_a_refused_connection_is_a_connection_error():
    error = failure_of(make_policy(f"http://127.0.0.1:{free_port()}/v1", retry=RetryPolicy(1, 0.01)))
    assert error.kind == "connection" and "2 attempts" in str(error)


def test_retry_after_is_honoured():
    with FaultyServer(schedule=["429"], retry_after="1") as server:
        started = time.monotonic()
        generate(make_policy(server))
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, "backoff alone would wait ~0.01s; Retry-After says 1s"


def test_a_long_retry_after_is_capped():
    with FaultyServer(schedule=["500"], retry_after="3600") as server:
        started = time.monotonic()
        generate(make_policy(server, retry=RetryPolicy(2, 0.01, retry_after_max_s=0.2)))
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_hung_server_cannot_stall_past_the_timeouts():
    with FaultyServer(schedule=["hang"] * 3, hang_s=30.0) as server:
        started = time.monotonic()
        error = failure_of(make_policy(server, retry=RetryPolicy(2, 0.01), timeout_s=0.5))
        elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    assert elapsed < 6, f"3 attempts of 0.5s each took {elapsed:.1f}s"


@pytest.mark.slow
def test_a_server_trickling_bytes_is_cut_off_by_the_attempt_deadline():
    with FaultyServer(schedule=["trickle"] * 2, hang_s=30.0) as server:
        started = time.monotonic()
        error = failure_of(make_policy(server, retry=RetryPolicy(1, 0.01), timeout_s=0.5, connect_timeout_s=0.5))
        elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    assert elapsed < 5, f"2 attempts of at most 1s each took {elapsed:.1f}s"


def test_a_hang_then_an_answer_succeeds():
    with FaultyServer(schedule=["hang"], hang_s=30.0) as server:
        [generation] = generate(make_policy(server, timeout_s=0.5))
    assert generation.text == 'Actions: ["Up"]' and server.outcomes == ["hang", "ok"]


def test_every_base_url_is_used_and_a_failing_one_is_avoided():
    with FaultyServer() as first, FaultyServer() as second, FaultyServer(schedule=["500"] * 100) as broken:
        generate(make_policy(first, second, balance="round_robin"), count=10)
        assert len(first.log) == len(second.log) == 5
        generations = generate(make_policy(broken, first, second), count=12)
    assert len(generations) == 12 and len(broken.log) > 0
    assert len(first.log) > 5 and len(second.log) > 5


def test_least_in_flight_prefers_the_idle_server():
    pool = ServerPool(["a", "b", "c"])
    with pool.use() as first, pool.use() as second:
        idle = ({"a", "b", "c"} - {first, second}).pop()
        assert pool.pick() == pool.pick() == idle
    assert pool.in_flight == {"a": 0, "b": 0, "c": 0}


def test_concurrency_is_bounded():
    with FaultyServer(delay_s=0.2) as server:
        generate(make_policy(server, max_concurrency=3), count=12)
    assert server.max_in_flight == 3
    assert len(server.log) == 12


def test_the_model_is_asked_once_when_not_given():
    with FaultyServer(model="served-model") as server:
        generate(make_policy(server, model=None), count=4)
    paths = [entry["path"] for entry in server.log]
    assert paths.count("/v1/models") == 1
    assert {json.loads(entry["body"])["model"] for entry in server.log if entry["body"]} == {"served-model"}


def test_a_server_that_lists_no_model_asks_for_policy_model():
    with FaultyServer(model=None) as server, pytest.raises(ConfigError, match="set policy.model=NAME"):
        generate(make_policy(server, model=None))


def test_the_request_carries_sampling_stop_and_thinking():
    sampling = SamplingParams(temperature=0.3, top_p=0.9, max_tokens=7, stop=["\n\n"])
    with FaultyServer() as server:
        generate(make_policy(server, enable_thinking=False), sampling=sampling)
        generate(make_policy(server))
    with_thinking, plain = (json.loads(entry["body"]) for entry in server.log)
    assert server.log[0]["path"] == "/v1/chat/completions"
    assert with_thinking["messages"] == MESSAGES
    assert (with_thinking["temperature"], with_thinking["top_p"], with_thinking["max_tokens"]) == (0.3, 0.9, 7)
    assert with_thinking["stop"] == ["\n\n"]
    assert with_thinking["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in plain and "stop" not in plain


def test_completions_mode_sends_and_returns_the_rendered_template():
    from transformers import AutoTokenizer

    from pettingllms.tiny_model import tiny_model_path

    path = str(tiny_model_path())
    with FaultyServer() as server:
        [generation] = generate(make_policy(server, mode="completions", tokenizer_path=path))
    expected = AutoTokenizer.from_pretrained(path).apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    body = json.loads(server.log[0]["body"])
    assert server.log[0]["path"] == "/v1/completions"
    assert body["prompt"] == generation.prompt_text == expected
    assert "messages" not in body and generation.text == 'Actions: ["Up"]'


def test_the_api_key_goes_only_into_the_authorization_header(monkeypatch):
    monkeypatch.setenv("TEST_SERVER_KEY", "sk-secret-123")
    monkeypatch.delenv("NO_SUCH_KEY_VARIABLE", raising=False)
    with FaultyServer() as server:
        generate(make_policy(server, api_key_env="TEST_SERVER_KEY"))
        generate(make_policy(server, api_key_env="NO_SUCH_KEY_VARIABLE"))
    with_key, without_key = (entry["headers"] for entry in server.log)
    assert with_key["Authorization"] == "Bearer sk-secret-123"
    assert "Authorization" not in without_key
    assert all(b"sk-secret-123" not in entry["body"] for entry in server.log)


def test_a_policy_survives_a_new_event_loop():
    with FaultyServer() as server:
        policy = make_policy(server)
        generate(policy)
        generate(policy)
    assert server.outcomes == ["ok", "ok"]


def test_settings_that_cannot_work_are_config_errors():
    with pytest.raises(ConfigError, match="needs a server: set policy.base_url"):
        OpenAIPolicy("p", [])
    with pytest.raises(ConfigError, match="mode='chatty' is invalid"):
        OpenAIPolicy("p", ["http://127.0.0.1:1/v1"], mode="chatty")
    with pytest.raises(ConfigError, match="completions mode .* needs the model's tokenizer"):
        OpenAIPolicy("p", ["http://127.0.0.1:1/v1"], mode="completions")
    with pytest.raises(ConfigError, match="'localhost:8000' is not an http.s. URL: write http://localhost:8000/v1"):
        OpenAIPolicy("p", ["localhost:8000"])
    with pytest.raises(ConfigError, match="'http://127.0.0.1:port/v1' is not an http.s. URL"):
        OpenAIPolicy("p", ["http://127.0.0.1:8000/v1", "http://127.0.0.1:port/v1"])


def test_base_urls_and_retry_after_are_read_as_servers_write_them():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now


def test_a_backoff_grows_and_is_jittered():
    import random

    retry, rng = RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0), random.Random(0)
    assert 0.5 <= retry.delay_s(1, None, rng) <= 1.0
    assert 1.0 <= retry.delay_s(2, None, rng) <= 2.0
    assert 2.5 <= retry.delay_s(10, None, rng) <= 5.0
    assert retry.delay_s(1, 7.0, rng) == 7.0 and retry.delay_s(1, 600.0, rng) == 60.0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_collection_against_a_flaky_server_accounts_for_every_episode(tmp_path):
    with FaultyServer(failure_rate=0.3, seed=3, hang_s=10.0) as server:
        result = collect(
            load_config(
                [
                    "env.name=sokoban",
                    "policy=openai",
                    f"policy.base_url={server.base_url}",
                    "policy.model=faulty-model",
                    "policy.timeout_s=0.5",
                    "policy.max_retries=1",
                    "training.sft_num_episodes=20",
                    f"training.sft_data_dir={tmp_path}",
                    "training.run_name=flaky",
                ]
            )
        )
    episodes = read_jsonl(result.files.rollouts)
    stats = json.loads(result.files.stats.read_text())
    assert len({episode["episode_id"] for episode in episodes}) == len(episodes) == 20
    assert stats["total_episodes"] == 20
    failed = Counter(episode["error"]["kind"] for episode in episodes if episode["error"])
    assert stats["errors"] == dict(failed)
    assert set(failed) <= TRANSIENT_ERROR_KINDS
    assert 0 < sum(failed.values()) < 20, "a 30% failure rate with one retry must cost some episodes, not all"
    assert set(server.outcomes) >= {"ok", "429", "500", "hang", "drop"}
    for episode in episodes:
        assert episode["error"] is not None or episode["terminated"] or episode["truncated"]


@pytest.mark.slow
def test_a_server_failing_30_percent_of_requests_costs_no_episode_with_6_retries(tmp_path):
    faults = ("429", "500", "hang", "malformed")
    with FaultyServer(failure_rate=0.3, faults=faults, seed=1, retry_after="0.2", hang_s=10.0) as server:
        result = collect(
            load_config(
                [
                    "env.name=sokoban",
                    "env.max_turns=1",
                    "policy=openai",
                    f"policy.base_url={server.base_url}",
                    "policy.model=faulty-model",
                    "policy.timeout_s=0.5",
                    "policy.max_retries=6",
                    "training.sft_num_episodes=100",
                    "training.only_success=false",
                    f"training.sft_data_dir={tmp_path}",
                    "training.run_name=defect",
                ]
            )
        )
    episodes = read_jsonl(result.files.rollouts)
    failed = Counter(episode["error"]["kind"] for episode in episodes if episode["error"])
    assert len(episodes) == 100 and Counter(server.outcomes)["malformed"] > 5
    # Each request fails with chance 0.3; losing an episode takes 7 failures in a row (p = 2e-4).
    assert "bad_response" not in failed and sum(failed.values()) <= 1, failed
