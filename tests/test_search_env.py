"""The search environment: the fictional world, retrieval, answers, the expert, user files and a retrieval server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import pettingllms
from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.envs.checker import play
from pettingllms.envs.search import parse_directive
from pettingllms.envs.search_world import (
    Bm25Index,
    answer_matches,
    generate_question,
    generate_world,
    normalize_answer,
    tokenize,
)
from pettingllms.exceptions import ConfigError, DataError, InfrastructureError

SEEDS = range(300)


def expert(env):
    return env.expert_reply()


# -- the world ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_world_and_question():
    for seed in range(10):
        first, second = (np.random.default_rng(seed) for _ in range(2))
        assert generate_world(first) == generate_world(second)
        assert generate_question(first, generate_world(first), 3) == generate_question(
            second, generate_world(second), 3
        )
    assert generate_world(np.random.default_rng(1)).passages != generate_world(np.random.default_rng(2)).passages


def test_every_name_word_is_invented_and_distinct_within_its_world():
    for seed in range(50):
        world = generate_world(np.random.default_rng(seed))
        words = [
            word
            for entity in world.entities.values()
            for word in entity.name.split()
            if entity.kind != "organisation" or word != entity.name.split()[-1]  # "Guild", "Society" repeat
        ]
        assert len(words) == len(set(words))
        assert len(world.passages) == len(world.entities)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_a_question_takes_one_passage_per_hop_and_never_names_its_answer(hops):
    for seed in range(40):
        rng = np.random.default_rng(seed)
        world = generate_world(rng)
        question = generate_question(rng, world, hops)
        passages = {passage.id: passage for passage in world.passages}
        assert len(question.hops) == hops
        assert len({hop.passage_id for hop in question.hops}) == hops, "a chain never visits an entity twice"
        assert question.hops[0].entity in question.text
        for hop, after in zip(question.hops, question.hops[1:]):
            assert after.entity in passages[hop.passage_id].text, "each passage names the next hop's entity"
        assert question.answers[0] in passages[question.hops[-1].passage_id].text
        assert normalize_answer(question.answers[0]) not in normalize_answer(question.text)
        assert not answer_matches(question.wrong_answer, question.answers)


# -- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Velmora River", "velmora river"),
        ("  Kibri. ", "kibri"),
        ("an Apple, a PEAR", "apple pear"),
        ("the   Zukraevux\tFoundry!", "zukraevux foundry"),
        ("1,874", "1874"),
        ("Theodora", "theodora"),  # "the" only as a word
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    "answer, golds, matches",
    [
        ("the Velmora river", ("Velmora River",), True),
        ("Velmora", ("Velmora River", "Velmora"), True),
        ("Velmora river, I think", ("Velmora River",), False),  # exact match, not word overlap
        ("Velmora", ("Velmora River",), False),
        ("the", ("The",), False),  # nothing left after normalizing never matches
        ("Kibri", ("Durusk", "kibri"), True),
    ],
)
def test_answer_matches_is_normalized_exact_match(answer, golds, matches):
    assert answer_matches(answer, golds) is matches


@pytest.mark.parametrize(
    "reply, parsed",
    [
        ("Answer: Kibri", ("answer", "Kibri")),
        ("I think so.\n**Answer:** Kibri", ("answer", "Kibri")),
        ("search: Zukraevux Foundry headquarters", ("search", "Zukraevux Foundry headquarters")),
        ("Search: first\nAnswer: second", ("answer", "second")),  # the last line counts
        ("Answer:", "the 'Answer:' line is empty"),
        ("I don't know.", "no 'Search: <query>' or 'Answer: <answer>' line in the reply"),
    ],
)
def test_parse_directive(reply, parsed):
    assert parse_directive(reply) == parsed


def test_a_huge_reply_of_blank_lines_is_parsed_in_linear_time():
    started = time.perf_counter()
    assert parse_directive(" \n" * 300_000 + "Answer: Kibri") == ("answer", "Kibri")
    assert time.perf_counter() - started < 5  # a prefix that crossed newlines made this quadratic: hours


# -- retrieval ----------------------------------------------------------------------------


def test_bm25_ranks_the_entity_passage_first_and_ignores_unknown_words():
    world = generate_world(np.random.default_rng(3))
    index = Bm25Index(world.passages)
    person = world.entities["person:5"]
    assert index.search(f"{person.name} born", 3)[0].id == "person:5"
    assert index.search("zzzz qqqq", 3) == []
    assert index.search("the of what", 3) == []  # stopwords only
    assert tokenize("Who founded the Ombrel Guild?") == ["founded", "ombrel", "guild"]


@pytest.mark.slow
def test_a_gold_passage_is_in_the_top_5_for_the_experts_queries():
    env = pettingllms.make("search_single_agent", top_k=5)
    hits = queries = 0
    for seed in SEEDS:
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, info = env.step(env.expert_reply())
            if "query" in info["details"]:
                queries += 1
                hits += env.task.gold_ids[len(env.queries) - 1] in info["details"]["retrieved"]
            if terminated or truncated:
                break
    assert queries >= 2 * len(SEEDS)
    assert hits / queries >= 0.95


# -- the environment ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["search_env", "search_single_agent"])
def test_the_expert_succeeds_on_300_seeds(name):
    env = pettingllms.make(name)
    assert all(play(env, seed, expert)[1]["success"] for seed in SEEDS)


def guess_without_searching(env) -> str:
    """A model with no search: it answers with a name from the question (the best it can do)."""
    names = re.findall(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*", env.task.question)
    return f"Answer: {names[-1] if names else 'unknown'}"


@pytest.mark.slow
def test_answering_without_searching_almost_never_succeeds():
    env = pettingllms.make("search_single_agent")
    guesses = [guess_without_searching, lambda e: "Answer: 1850", lambda e: "Answer: Mount Kibri"]
    for guess in guesses:
        successes = sum(play(env, seed, guess)[1]["success"] for seed in SEEDS)
        assert successes / len(SEEDS) < 0.05


def test_the_search_agent_must_search_and_its_queries_are_recorded():
    env = pettingllms.make("search_env", hops=2)
    env.reset(seed=4)
    info = env.step("Answer: Kibri")[4]
    assert info["valid"] is False
    assert info["parse_error"] == "the search agent only searches: end with 'Search: <query>'"
    env.reset(seed=4)
    obs, reward, _, _, info = env.step(env.expert_reply())
    assert info["details"]["query"] == env.task.queries[0]
    assert env.task.gold_ids[0] in info["details"]["retrieved"] and reward == 1.0
    assert env.task.queries[0].split()[0] in obs[-1]["content"], "the reasoning agent sees the passages found"


def test_a_hop_count_can_be_fixed():
    for hops in (1, 2, 3):
        env = pettingllms.make("search_single_agent", hops=hops)
        _, info = play(env, 0, expert)
        assert len(env.task.gold_ids) == hops and len(env.queries) == hops and info["success"]
        assert env.task_id == f"search-hops{hops}-0"


def test_the_wrong_expert_answers_a_plausible_wrong_name():
    env = pettingllms.make("search_single_agent")
    env.reset(seed=9)
    reply = env.expert_reply(wrong=True)
    assert reply.endswith(f"Answer: {env.task.wrong_answer}")
    info = env.step(reply)[4]
    assert info["success"] is False and info["details"]["exact_match"] is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hops": 4}, "hops must be 1, 2, 3 or None"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"corpus_path": "corpus.jsonl"}, "need env.dataset=<your questions file>"),
        ({"dataset": "qa.jsonl"}, "exactly one of env.kwargs.corpus_path"),
    ],
)
def test_bad_arguments_say_what_is_expected(kwargs, message):
    with pytest.raises((ValueError, ConfigError), match=re.escape(message)):
        pettingllms.make("search_env", **kwargs)


# -- your own files -----------------------------------------------------------------------

CORPUS = [
    {"id": "d1", "title": "Ada Lovelace", "text": "Ada Lovelace wrote the first published algorithm in 1843."},
    {"id": "d2", "title": "Charles Babbage", "text": "Charles Babbage designed the Analytical Engine."},
    {"id": "d3", "title": "Analytical Engine", "text": "The Analytical Engine was a proposed mechanical computer."},
]
QUESTIONS = [
    {"question": "Who designed the Analytical Engine?", "answers": ["Charles Babbage", "Babbage"]},
    {"question": "In which year did Ada Lovelace publish her algorithm?", "answer": "1843"},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def user_files(tmp_path) -> tuple[str, str]:
    return write_jsonl(tmp_path / "qa.jsonl", QUESTIONS), write_jsonl(tmp_path / "corpus.jsonl", CORPUS)


def test_a_corpus_and_questions_file(user_files):
    questions, corpus = user_files
    env = pettingllms.make("search_env", dataset=questions, corpus_path=corpus)
    for index, row in enumerate(QUESTIONS):
        trace, info = play(env, index, expert)
        assert info["success"] is True and env.task_id == f"qa/{index}"
        assert env.task.question == row["question"]
    env.reset(seed=0, options={"task_index": 0})
    info = env.step(env.expert_reply())[4]
    assert info["details"]["retrieved"][0] == "d2"
    assert "gold_retrieved" not in info["details"], "a user's corpus has no known gold passages"
    assert env.task.wrong_answer == "1843", "the wrong answer is another question's"
    assert env.has_test_split is False and pettingllms.make("search_env").has_test_split is True


def test_bad_user_files_are_data_errors(tmp_path, user_files):
    questions, corpus = user_files
    no_answer = write_jsonl(tmp_path / "bad_qa.jsonl", [{"question": "Why?"}])
    with pytest.raises(DataError, match="needs 'question' and 'answers' columns"):
        pettingllms.make("search_env", dataset=no_answer, corpus_path=corpus)
    no_text = write_jsonl(tmp_path / "bad_corpus.jsonl", [{"id": 1, "body": "x"}])
    with pytest.raises(DataError, match="has no 'text' column"):
        pettingllms.make("search_env", dataset=questions, corpus_path=no_text)


@pytest.mark.slow
def test_collect_with_user_files_through_the_config(tmp_path, user_files):
    questions, corpus = user_files
    config = load_config(
        [
            "env.name=search_env",
            f"env.dataset={questions}",
            f"env.kwargs.corpus_path={corpus}",
            "policy=expert",
            "training.sft_num_episodes=2",
            f"training.sft_data_dir={tmp_path / 'out'}",
        ]
    )
    result = collect(config)
    assert result.stats["successful_episodes"] == 2
    episodes = [json.loads(line) for line in result.files.rollouts.read_text().splitlines()]
    assert {turn["details"].get("query") for episode in episodes for turn in episode["turns"]} >= {
        row["question"] for row in QUESTIONS
    }


# -- a retrieval server -------------------------------------------------------------------


class RetrievalHandler(BaseHTTPRequestHandler):
    """POST {"query", "topk"} -> the corpus passages sharing a word with the query (or a fault)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.server.fault == "500":
            self._send(500, b"overloaded")
            return
        if self.server.fault == "not_a_list":
            self._send(200, json.dumps({"result": []}).encode())
            return
        words = set(body["query"].lower().split())
        hits = [row for row in CORPUS if words & set(f"{row['title']} {row['text']}".lower().split())]
        self._send(200, json.dumps(hits[: body["topk"]]).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args) -> None:
        pass


@contextmanager
def retrieval_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RetrievalHandler)
    server.requests, server.fault = [], None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_retrieval_server_supplies_the_passages(user_files):
    questions, _ = user_files
    with retrieval_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/retrieve"
        env = pettingllms.make("search_env", dataset=questions, retriever_url=url, top_k=2)
        _, info = play(env, 0, expert)
        assert info["success"] is True
        assert server.requests[-1] == {"query": QUESTIONS[0]["question"], "topk": 2}
        assert "Charles Babbage" in [passage.title for passage in env.found]

        env.reset(seed=0, options={"task_index": 0})
        for fault, kind in (("500", "http_5xx"), ("not_a_list", "bad_response")):
            server.fault = fault
            with pytest.raises(InfrastructureError) as caught:  # never made-up passages
                env.step(env.expert_reply())
            assert caught.value.kind == kind and url in str(caught.value)


def test_a_retrieval_server_that_is_down_is_one_clear_error(user_files):
    questions, _ = user_files
    with retrieval_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/retrieve"
    with pytest.raises(
        ConfigError, match=re.escape(f"env.kwargs.retriever_url: retrieval server {url} is not answering")
    ):
        pettingllms.make("search_env", dataset=questions, retriever_url=url)
