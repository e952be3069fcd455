"""Arbitrary text into every reply parser and both JSONL readers: nothing raises but the documented errors.

A model writes anything: truncated fences, unbalanced brackets, megabytes of one token, stray
unicode. The env API promises (docs/custom-env.md) that `env.step` never raises on it and that a broken data file is
a `DataError` (one line for the user), never a traceback. These tests hold the code to that
with Hypothesis.
"""

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pettingllms
from pettingllms import envs, sandbox
from pettingllms.envs.code import extract_code, parse_test_cases
from pettingllms.envs.math import printed_answer
from pettingllms.envs.math_tasks import extract_boxed
from pettingllms.envs.planning import ReplyParseError, answer_text, extract_python_block, parse_moves, parse_number_grid
from pettingllms.exceptions import DataError
from pettingllms.runfiles import read_ledger
from pettingllms.training.data import read_records

# tmp_path is shared by the examples of one test on purpose: each example rewrites its file.
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

FRAGMENTS = [
    "```",
    "```python\n",
    "```py\n",
    "```python3\n",
    "```Python \n",
    "```input\n",
    "```output\n",
    "```\n",
    "Actions:",
    "actions:",
    "ACTIONS: ",
    "Actions: [",
    "\\boxed{",
    "\\fbox{",
    "\\boxed {",
    "{",
    "}",
    "[",
    "]",
    "[[",
    "]]",
    "(",
    ")",
    "Up",
    "down",
    "LEFT",
    "r",
    "U",
    "→",
    "->",
    ",",
    ";",
    ".",
    "'",
    '"',
    "`",
    "*",
    "\n",
    "\n\n",
    " ",
    "\t",
    "\r\n",
    "\r",
    "\x00",
    "\ufeff",
    "\u2028",
    "\ud7ff",
    "é",
    "数",
    "🙂",
    "1",
    "9",
    "0",
    "-3",
    "12345678901234567890",
    "1e309",
    "\\frac{1}{2}",
    "^",
    "10^{10}",
    "assert ",
    "assert f(1) == 2\n",
    "def f(x):\n    return x\n",
    "print('Actions: [\"Up\"]')\n",
    "import sys\n",
    "while True: pass\n",
    "<think>",
    "</think>",
    "####",
    "=",
]
fragment = st.sampled_from(FRAGMENTS)
# One fragment (or a short random string) repeated thousands of times: the linear-time claims.
huge_repeat = st.tuples(st.one_of(fragment, st.text(min_size=1, max_size=4)), st.integers(500, 10_000)).map(
    lambda pair: pair[0] * pair[1]
)
# A program or test block whose expression nests thousands deep (degenerate "1+1+1+..." output).
DEEP_NESTING = "```python\nassert " + "-" * 100_000 + "1\n```"
nested_block = st.tuples(
    st.sampled_from(["-", "~", "not ", "1+", "a.", "()", "(", "[", "lambda:", "a if b else "]), st.integers(100, 60_000)
).map(lambda pair: f"```python\nassert {pair[0] * pair[1]}1\n```")
reply_text = st.one_of(
    st.text(),
    st.lists(st.one_of(fragment, st.text(max_size=12)), max_size=40).map("".join),
    st.lists(st.one_of(fragment, huge_repeat, st.text(max_size=8)), max_size=4).map("".join),
    nested_block,
)


# -- the pure parsers ------------------------------------------------------------------


@FUZZ
@given(reply_text)
@pytest.mark.slow
def test_planning_parsers_raise_only_reply_parse_error(text):
    for parse in (
        extract_python_block,
        answer_text,
        lambda t: answer_text(t, multiline=True),
        parse_moves,
        lambda t: parse_number_grid(t, 4),
        lambda t: parse_number_grid(t, 9),
    ):
        try:
            value = parse(text)
        except ReplyParseError as error:
            assert str(error), "a parse error must say what was wrong"
            continue
        assert value is not None
    try:
        moves = parse_moves(text)
    except ReplyParseError:
        return
    assert moves and set(moves) <= {"Up", "Down", "Left", "Right"}


@FUZZ
@given(reply_text)
def test_grid_parser_gives_a_full_grid_or_an_error(text):
    try:
        grid = parse_number_grid(text, 4)
    except ReplyParseError:
        return
    assert len(grid) == 4 and all(len(row) == 4 and all(isinstance(cell, int) for cell in row) for row in grid)


@FUZZ
@given(reply_text)
@pytest.mark.slow
def test_code_and_math_parsers_return_text_or_none(text):
    code = extract_code(text)
    assert code is None or (isinstance(code, str) and code.strip())
    cases = parse_test_cases(text)
    assert isinstance(cases, tuple) and len(cases) <= 10
    assert all(isinstance(stdin, str) and isinstance(expected, str) for stdin, expected in cases)
    boxed = extract_boxed(text)
    assert boxed is None or (isinstance(boxed, str) and boxed.strip() == boxed and boxed)
    answer = printed_answer(text)
    assert answer is None or (isinstance(answer, str) and answer)


# -- env.step on every agent of every registered env -------------------------------------


def echo_sandbox(code, *, stdin="", timeout_s=5.0, **limits):
    """Stands in for the sandbox ONLY for speed (the real one is tested in test_sandbox.py):
    the "program" prints its own source, so the output parsers see the fuzzed text too."""
    return sandbox.SandboxResult(returncode=0, stdout=code, stderr="", timed_out=False)


@pytest.fixture
def fast_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "run_python", echo_sandbox)


@pytest.fixture(scope="module")
def stdio_tasks(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz_data") / "stdio.jsonl"
    task = {
        "question": "Print the sum of two numbers.",
        "test_input": ["1 2\n"],
        "test_output": ["3\n"],
        "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
    }
    path.write_text(json.dumps(task) + "\n")
    return str(path)


def env_agent_cases():
    cases = []
    for name in envs.ENVIRONMENTS:
        for position, agent in enumerate(envs.env_class(name).possible_agents):
            marks = []
            cases.append(pytest.param(name, position, id=f"{name}-{agent}", marks=marks))
    cases.append(pytest.param("code_env:stdio", 1, id="code_env-stdio-test_generator"))
    return cases


# Slow: 200 examples per agent of every registered env, 1-10 s each on 2 cores (the math agents
# verify every printed answer), so the whole test grows with the registry. The fast suite keeps
# the parser tests above and tests/test_registry.py's hostile replies to every agent.
@pytest.mark.slow
@pytest.mark.parametrize("name, position", env_agent_cases())
def test_env_step_never_raises_on_any_reply(name, position, fast_sandbox, stdio_tasks):
    if name == "code_env:stdio":
        env = pettingllms.make("code_env", dataset=stdio_tasks)
    else:
        env = pettingllms.make(name)
    agent = env.unwrapped.possible_agents[position]

    @FUZZ
    @given(reply_text)
    @example(DEEP_NESTING)
    def step_with(text):
        obs, info = env.reset(seed=3, options={"task_index": 0})
        for _ in range(position):  # the agents before ours play the expert's reply
            obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_reply())
            assert not (terminated or truncated)
        assert info["agent"] == agent
        obs, reward, terminated, truncated, info = env.step(text)
        assert isinstance(reward, float)
        assert isinstance(info["valid"], bool)
        if info["valid"]:
            assert info["parse_error"] is None
        else:
            assert isinstance(info["parse_error"], str) and info["parse_error"]
            assert reward == 0.0
        json.dumps(info["details"])  # the rollout log must be able to hold it
        if not (terminated or truncated):
            assert obs and all(isinstance(message["content"], str) for message in obs)

    step_with()


# -- the readers -------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
message = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["user", "assistant", "system"]), json_value),
        "content": st.one_of(st.text(max_size=10), json_value),
    }
)
record_like = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(message, max_size=3), json_value)}, optional={"metadata": json_value}
    ),
    st.fixed_dictionaries(
        {"prompt": json_value}, optional={"response": json_value, "completion": json_value, "metadata": json_value}
    ),
)
jsonl_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(record_like.map(json.dumps), st.text(max_size=20)), max_size=5).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    st.lists(
        st.one_of(record_like.map(json.dumps), st.binary(max_size=10).map(lambda b: b.decode("latin-1"))), max_size=5
    ).map(lambda lines: "\n".join(lines).encode()),
    st.sampled_from([b"1" * 5000, b"[" * 100_000, b'{"messages": ' + b"[" * 50_000, b"\xff\xfe", b"\n\n"]),
)


@FUZZ
@given(data=jsonl_bytes)
@example(data=b"\x80")
@example(data=b"1" * 5000)
@example(data=b"[" * 100_000)
@example(data=b'{"prompt": 5, "response": "x"}')
@pytest.mark.slow
def test_read_records_returns_records_or_raises_data_error(tmp_path, data):
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    try:
        records = read_records([str(path)])
    except DataError as error:
        assert str(path) in str(error), "the message must name the file"
        return
    assert records
    for record in records:
        assert record["messages"][-1]["role"] == "assistant"
        assert all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in record["messages"])
        assert isinstance(record["metadata"], dict)


episode_like = st.one_of(
    json_value,
    st.fixed_dictionaries({"episode_id": json_value}, optional={"turns": json_value}),
    st.fixed_dictionaries({"episode_id": st.text(max_size=8)}),
)
ledger_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(episode_like.map(json.dumps), st.text(max_size=20)), max_size=5).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    st.lists(episode_like.map(json.dumps), max_size=5).map(lambda lines: "".join(x + "\n" for x in lines).encode()),
    st.sampled_from([b"1" * 5000 + b"\n", b"[" * 100_000 + b"\n", b"\xff\xfe\n", b"\n\n"]),
)


@FUZZ
@given(data=ledger_bytes)
@example(data=b"\xff\n")
@example(data=b"1" * 5000 + b"\n")
@example(data=b"[" * 100_000 + b"\n")
@example(data=b"null\n")
@example(data=b"{}\n")
@example(data=b'{"episode_id": [1]}\n')
@pytest.mark.slow
def test_read_ledger_returns_episodes_or_raises_data_error(tmp_path, data):
    path = tmp_path / "rollouts_fuzz.jsonl"
    path.write_bytes(data)
    try:
        episodes = read_ledger(path)
    except DataError as error:
        assert str(path) in str(error), "the message must name the file"
        return
    assert isinstance(episodes, list)
    assert all(isinstance(episode, dict) and "episode_id" in episode for episode in episodes)
    assert len({episode["episode_id"] for episode in episodes}) == len(episodes)
    repaired = path.read_bytes()
    assert repaired == b"" or repaired.endswith(b"\n"), "a torn last line must be cut off"
