"""The search environment: a search agent and a reasoning agent answer a question from passages only search reaches."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pettingllms.envs.base import Message, TurnBasedTextEnv, TurnResult
from pettingllms.envs.code_tasks import cached_load, read_rows
from pettingllms.envs.search_world import (
    Bm25Index,
    Passage,
    answer_matches,
    generate_question,
    generate_world,
    normalize_answer,
)
from pettingllms.exceptions import ConfigError, DataError, InfrastructureError

PASSAGE_CHARS = 600
"""How much of one passage the agents see."""
SHOWN_PASSAGES = 15
"""The most passages a prompt shows (the latest found)."""
_DIRECTIVE = re.compile(r"^[ \t*_#>`]*(search|answer)[ \t*_`]*:(.*)$", re.IGNORECASE | re.MULTILINE)
"""A `Search:` / `Answer:` line; the prefix never crosses a newline, so huge replies cost linear time."""


@dataclass(frozen=True)
class SearchTask:
    task_id: str
    question: str
    answers: tuple[str, ...]
    wrong_answer: str
    queries: tuple[str, ...]
    """The expert's queries, one per hop (a user file's task: the question itself)."""
    requests: tuple[str, ...]
    """What the expert reasoning agent asks the search agent for before each hop."""
    gold_ids: tuple[str, ...] = ()
    """The passages that hold each hop's fact (unknown for a user's files)."""


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Passage]: ...


# -- reading replies ----------------------------------------------------------------------


def parse_directive(text: str) -> tuple[str, str] | str:
    """(`search` or `answer`, its text) from the reply's last `Search:` / `Answer:` line, or why there is none."""
    found = list(_DIRECTIVE.finditer(text))
    if not found:
        return "no 'Search: <query>' or 'Answer: <answer>' line in the reply"
    kind, content = found[-1][1].lower(), found[-1][2].strip().strip("*`_ ").strip()
    if not content:
        return f"the '{kind.capitalize()}:' line is empty"
    return kind, content[:500]


# -- the user's files and the retrieval server --------------------------------------------


def load_corpus(path: str) -> Bm25Index:
    """A BM25 index over a JSONL/Parquet corpus of `{id, title, text}` rows, built once per file."""
    return cached_load(path, _read_corpus)


def _read_corpus(path: str) -> Bm25Index:
    rows, columns = read_rows(path)
    if "text" not in columns:
        found = ", ".join(sorted(columns))
        raise DataError(f"Corpus {path} has no 'text' column (found: {found}); its rows are {{id, title, text}}.")
    passages = [
        Passage(str(row.get("id", number)), str(row.get("title") or ""), str(row.get("text") or ""))
        for number, row in enumerate(rows)
    ]
    return Bm25Index(passages)


def load_search_questions(path: str) -> list[SearchTask]:
    """The questions of a JSONL/Parquet file of `{question, answers}` rows (`answers` a list or one string)."""
    return cached_load(path, _read_questions)


def _read_questions(path: str) -> list[SearchTask]:
    rows, columns = read_rows(path)
    if "question" not in columns or not columns & {"answers", "answer"}:
        raise DataError(
            f"Questions file {path} needs 'question' and 'answers' columns (found: {', '.join(sorted(columns))})."
        )
    stem = Path(path).name.split(".")[0]
    golds = []
    for number, row in enumerate(rows):
        value = row.get("answers", row.get("answer"))
        answers = tuple(str(a) for a in value) if isinstance(value, list | tuple) else (str(value or ""),)
        if not any(normalize_answer(a) for a in answers) or not str(row.get("question") or "").strip():
            raise DataError(f'Questions file {path}, row {number}: needs a question and an answer ("answers": [...]).')
        golds.append(answers)
    tasks = []
    for number, (row, answers) in enumerate(zip(rows, golds)):
        others = [g[0] for g in golds[number + 1 :] + golds[:number] if not answer_matches(g[0], answers)]
        question = str(row["question"])
        wrong = others[0] if others else f"not {answers[0]}"
        tasks.append(SearchTask(f"{stem}/{number}", question, answers, wrong, (question,), (question,)))
    return tasks


class RemoteRetriever:
    """A retrieval server: `POST {"query": ..., "topk": k}` answers a JSON list of passages, each a
    string or an object with `text` (or `contents`) and optionally `id` and `title`."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url, self.timeout_s = url, timeout_s

    def search(self, query: str, k: int) -> list[Passage]:
        import httpx

        where = f"retrieval server {self.url}"
        try:
            response = httpx.post(self.url, json={"query": query, "topk": k}, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise InfrastructureError("timeout", f"{where} did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise InfrastructureError("connection", f"{where} is not answering ({error})") from None
        if response.status_code != 200:
            kind = "http_5xx" if response.status_code >= 500 else "bad_response"
            raise InfrastructureError(kind, f"{where} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            items = response.json()
        except ValueError:
            raise InfrastructureError("bad_response", f"{where} answered something that is not JSON") from None
        if not isinstance(items, list):
            raise InfrastructureError("bad_response", f"{where} answered a {type(items).__name__}, not a JSON list")
        return [_passage_from(item, number, where) for number, item in enumerate(items[:k])]


def _passage_from(item: Any, number: int, where: str) -> Passage:
    if isinstance(item, str):
        return Passage(str(number), "", item)
    if isinstance(item, dict):
        text = item.get("text") or item.get("contents")
        if isinstance(text, str):
            return Passage(str(item.get("id", number)), str(item.get("title") or ""), text)
    raise InfrastructureError("bad_response", f"{where}: passage {number} is neither text nor an object with 'text'")


# -- the environment ----------------------------------------------------------------------


class SearchEnv(TurnBasedTextEnv):
    """
    Answer a question from a collection of passages that only search reaches, as a team of two.

    ## Description
    By default each episode draws a fictional world (`search_world.py`): two dozen people,
    eight organisations, ten cities and four regions with invented names, one passage each,
    and a question whose answer takes 1, 2 or 3 hops ("In which city was the founder of the
    Quorveth Guild born?" needs the guild's passage, then the founder's). No model knows
    these names, so answering without searching fails. Retrieval is BM25 (`bm25s`) over the
    world's passages. With your own data: `dataset` is a file of `{question, answers}` rows
    and the passages come from `corpus_path` (`{id, title, text}` rows, BM25) or from a
    retrieval server at `retriever_url` (`POST {"query", "topk"}` answering a JSON list of
    passages; a server that is down is a one-line error at start, never made-up results).

    ## Agents
    `web_search_agent`, then `search_reasoning_agent`, once each per round.
    - `web_search_agent` writes a query; the environment retrieves the top `top_k` passages.
    - `search_reasoning_agent` reads every passage found so far and answers, or asks for
      another search (its request is shown to the search agent next round).

    ## Observation
    `[system, user]`: the role and the reply format, then the question, the passages found
    so far (numbered, each cut to 600 characters, the latest 15), the queries made, and the
    reasoning agent's latest request.

    ## Action format
    A reply's last `Search: <query>` or `Answer: <short answer>` line counts (any case,
    markdown emphasis allowed). `web_search_agent` must write `Search:`;
    `search_reasoning_agent` writes either. No such line, or an empty one, is an invalid
    action.

    ## Success and rewards
    Success: the final answer equals a gold answer under normalized exact match (lowercase,
    no punctuation, no a/an/the, whitespace collapsed): `the Velmora River` matches
    `Velmora River`, `Velmora river, I think` does not.
    - `search_reasoning_agent`: reward 1 and `agent_success` when its answer is right.
    - `web_search_agent` (generated worlds): reward 1 when its query finds a gold passage not
      found before; `agent_success` once every gold passage has been found.
    `details` records each query and the passage ids it found (and which were gold).

    ## Episode end
    Terminated at the first answer; truncated after `max_turns` rounds without one.

    ## Arguments
    ```python
    pettingllms.make("search_env", max_turns=4, hops=None, top_k=3)
    ```
    - `max_turns`: rounds, default 4 (a 3-hop question takes 3).
    - `hops`: 1, 2 or 3 for generated questions; None (default) draws one of them each episode.
    - `top_k`: passages per search, default 3.
    - `dataset`: "generated" or a `{question, answers}` JSONL/Parquet file (`task_index` i
      plays row i mod N; `shuffle` walks them in a seeded order).
    - `corpus_path` / `retriever_url` (exactly one with a file `dataset`), `timeout_s` for
      the server.

    ## Version history
    * v0: initial version.
    """

    possible_agents = ("web_search_agent", "search_reasoning_agent")
    default_max_turns = 4
    task_source = "seeded fictional worlds, or your corpus/retrieval server + QA file"

    @property
    def has_test_split(self) -> bool:
        return self.tasks is None  # generated worlds come from disjoint test seeds; a questions file is one split

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        dataset: str = "generated",
        shuffle: bool = False,
        hops: int | None = None,
        top_k: int = 3,
        corpus_path: str | None = None,
        retriever_url: str | None = None,
        timeout_s: float = 10.0,
    ):
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        if hops is not None and hops not in (1, 2, 3):
            raise ValueError(f"hops must be 1, 2, 3 or None (a mix), got {hops!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.dataset, self.hops, self.top_k = dataset, hops, top_k
        self.tasks: list[SearchTask] | None = None
        self.corpus: Retriever | None = None
        if dataset == "generated":
            if corpus_path or retriever_url:
                raise ConfigError(
                    "search env: corpus_path / retriever_url need env.dataset=<your questions file>; "
                    "generated questions bring their own world."
                )
        else:
            if bool(corpus_path) == bool(retriever_url):
                raise ConfigError(
                    f"search env with env.dataset={dataset}: give the passages as exactly one of "
                    "env.kwargs.corpus_path=<corpus.jsonl> or env.kwargs.retriever_url=<http://host:port/retrieve>."
                )
            self.tasks = load_search_questions(dataset)
            self.corpus = load_corpus(corpus_path) if corpus_path else _checked_server(retriever_url, timeout_s)
        self.order = np.random.default_rng(0).permutation(len(self.tasks)) if shuffle and self.tasks else None

    # -- the task -------------------------------------------------------------------------

    def _reset_task(self, options: dict[str, Any]) -> None:
        if self.tasks is None:
            self.task, self.world_passages = self._generated_task()
            self.retriever: Retriever | None = None  # indexed at the first search: answering blind costs nothing
        else:
            index = options.get("task_index")
            index = int(self.np_random.integers(len(self.tasks))) if index is None else int(index) % len(self.tasks)
            self.task = self.tasks[int(self.order[index]) if self.order is not None else index]
            self.retriever = self.corpus
        self.task_id = self.task.task_id
        self.found: list[Passage] = []
        self.queries: list[str] = []
        self.request: str | None = None
        self.final_answer: str | None = None

    def _generated_task(self) -> tuple[SearchTask, tuple[Passage, ...]]:
        world = generate_world(self.np_random)
        hops = self.hops or int(self.np_random.integers(1, 4))
        question = generate_question(self.np_random, world, hops)
        requests = tuple(f"the passage about {hop.entity}: {hop.wanted}" for hop in question.hops)
        queries = tuple(hop.query for hop in question.hops)
        gold = tuple(hop.passage_id for hop in question.hops)
        suffix = (
            str(self.seed) if self.seed is not None else "h" + hashlib.sha1(question.text.encode()).hexdigest()[:10]
        )
        task_id = "-".join(part for part in ("search", f"hops{self.hops}" if self.hops else "", suffix) if part)
        task = SearchTask(task_id, question.text, question.answers, question.wrong_answer, queries, requests, gold)
        return task, world.passages

    # -- replies --------------------------------------------------------------------------

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        directive = parse_directive(text)
        if isinstance(directive, str):
            return TurnResult(valid=False, parse_error=directive, agent_success=False)
        kind, content = directive
        if agent == "web_search_agent":
            if kind != "search":
                return TurnResult(valid=False, parse_error="the search agent only searches: end with 'Search: <query>'")
            return self._search(content)
        if kind == "answer":
            self.final_answer = content
            correct = answer_matches(content, self.task.answers)
            details = {"answer": content, "exact_match": correct}
            return TurnResult(reward=float(correct), done=True, agent_success=correct, details=details)
        return self._ask_for_search(content)

    def _ask_for_search(self, request: str) -> TurnResult:
        self.request = request
        return TurnResult(details={"request": request})

    def _search(self, query: str) -> TurnResult:
        if self.retriever is None:
            self.retriever = Bm25Index(self.world_passages)
        results = self.retriever.search(query, self.top_k)
        seen = {passage.id for passage in self.found}
        new = [passage for passage in results if passage.id not in seen]
        self.found += new
        self.queries.append(query)
        details: dict[str, Any] = {"query": query, "retrieved": [passage.id for passage in results]}
        if not self.task.gold_ids:
            return TurnResult(details=details)
        details["gold_retrieved"] = [p.id for p in results if p.id in self.task.gold_ids]
        found_all = set(self.task.gold_ids) <= {passage.id for passage in self.found}
        new_gold = any(passage.id in self.task.gold_ids for passage in new)
        return TurnResult(reward=float(new_gold), agent_success=found_all, details=details)

    def _episode_success(self) -> bool:
        return self.final_answer is not None and answer_matches(self.final_answer, self.task.answers)

    # -- prompts --------------------------------------------------------------------------

    def _prompt(self, agent: str) -> list[Message]:
        if agent == "web_search_agent":
            system = (
                "You are the search agent of a team answering a question from a collection of passages that "
                "only search can reach. Write one search query of a few keywords (the names and the fact you "
                "need), as the last line of your reply: `Search: <query>`."
            )
            ask = "Write the next query."
        else:
            system = (
                "You are the reasoning agent of a team answering a question from passages that a search agent "
                "retrieves. The answer is a short name, number or phrase stated in the passages: never guess. "
                "When the passages hold the answer, end with `Answer: <short answer>`. Otherwise end with "
                "`Search: <what to look up next>`, and the search agent will search for it."
            )
            ask = "Answer, or ask for the next search."
        return [{"role": "system", "content": system}, {"role": "user", "content": self._context(ask)}]

    def _context(self, ask: str) -> str:
        parts = [f"## Question\n{self.task.question}", f"## Passages found so far\n{self._passages_text()}"]
        if self.queries:
            parts.append("## Queries made\n" + "\n".join(f"- {query}" for query in self.queries))
        if self.request and self.agent_selection == "web_search_agent":
            parts.append(f"## The reasoning agent asks for\n{self.request}")
        return "\n\n".join(parts + [ask])

    def _passages_text(self) -> str:
        if not self.found:
            return "(none yet)" if not self.queries else "(no search has found anything yet)"
        first = max(0, len(self.found) - SHOWN_PASSAGES)
        lines = []
        for number, passage in enumerate(self.found[first:], start=first + 1):
            text = passage.text if len(passage.text) <= PASSAGE_CHARS else passage.text[:PASSAGE_CHARS] + "..."
            lines.append(f"[{number}] {passage.title}: {text}" if passage.title else f"[{number}] {text}")
        return "\n".join(lines)

    def render(self) -> str:
        answer = f"\nAnswer: {self.final_answer}" if self.final_answer is not None else ""
        return f"{self.task.question}\n" + "\n".join(f"Search: {q}" for q in self.queries) + answer

    # -- the expert -----------------------------------------------------------------------

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        hop = min(len(self.queries), len(self.task.queries) - 1)
        if agent == "web_search_agent":
            if wrong:
                return f"I will look up {self.task.wrong_answer}.\nSearch: {self.task.wrong_answer}"
            return f"I need {self.task.requests[hop]}.\nSearch: {self.task.queries[hop]}"
        if wrong:
            return f"The answer must be {self.task.wrong_answer}.\nAnswer: {self.task.wrong_answer}"
        if len(self.queries) >= len(self.task.queries):
            gold = self.task.answers[0]
            return f"The passages found state it: the answer is {gold}.\nAnswer: {gold}"
        return f"The passages do not hold the answer yet.\nSearch: {self.task.requests[hop]}"


class SearchSingleAgentEnv(SearchEnv):
    """
    `SearchEnv` with one agent that both searches and answers.

    ## Agents
    `search_reasoning_agent` alone.

    ## Action format
    The reply's last `Search: <query>` line runs the query (the passages found come back in
    the next observation); an `Answer: <short answer>` line ends the episode.

    ## Success and rewards
    As `SearchEnv`: normalized exact match; reward 1 for a right answer, and (generated
    worlds) 1 for a search that finds a gold passage not found before.

    ## Episode end
    Terminated at the first answer; truncated after `max_turns` replies (default 5).

    ## Arguments / Version history
    As `SearchEnv`. v0: initial version.
    """

    possible_agents = ("search_reasoning_agent",)
    default_max_turns = 5

    def _ask_for_search(self, request: str) -> TurnResult:
        return self._search(request)

    def _prompt(self, agent: str) -> list[Message]:
        system = (
            "You answer a question from a collection of passages that you reach only by searching. Each reply "
            "either searches, ending with `Search: <query>` (a few keywords: the names and the fact you need; "
            "the passages found come back to you), or answers, ending with `Answer: <short answer>`, which "
            "ends the episode. The answer is a name, number or phrase stated in the passages: search before "
            "answering, one fact at a time."
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": self._context("Search or answer.")}]

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        if wrong or len(self.queries) >= len(self.task.queries):
            return super()._expert_reply(agent, wrong)
        return super()._expert_reply("web_search_agent", wrong)


def _checked_server(url: str, timeout_s: float) -> RemoteRetriever:
    """The retrieval server at `url`, once it has answered a query: a server that is down stops the run at start."""
    server = RemoteRetriever(url, timeout_s)
    try:
        server.search("test", 1)
    except InfrastructureError as error:
        message = f"env.kwargs.retriever_url: {error}. Start the server, or give env.kwargs.corpus_path."
        raise ConfigError(message) from None
    return server
