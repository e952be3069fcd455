"""The coding environment: task loading, ground-truth verification, the expert, bad input."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow
import pyarrow.parquet
import pytest

import pettingllms
from pettingllms.envs.code import CodeEnv, extract_code, parse_test_cases
from pettingllms.envs.code_tasks import check_tests, function_program, load_code_tasks, outputs_match
from pettingllms.exceptions import DataError

STDIO_ROWS = [
    {
        "question": "Read two integers and print their sum.",
        "test_input": ["1 2\n", "10 -3\n", "0 0\n"],
        "test_output": ["3\n", "7\n", "0\n"],
        "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
    },
    {
        "question": "Read a line and print it reversed.",
        "test_input": ["abc\n", "racecar\n"],
        "test_output": ["cba\n", "racecar\n"],
        "solution": "print(input()[::-1])\n",
    },
    {
        "question": "Print the number of words on the line.",
        "test_input": ["a b  c\n"],
        "test_output": ["3"],
        "solution": None,
    },
]
SUM_SOLUTION = STDIO_ROWS[0]["solution"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_parquet(path, rows):
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return str(path)


@pytest.fixture
def stdio_file(tmp_path):
    return write_jsonl(tmp_path / "tasks.jsonl", STDIO_ROWS)


def play(env, reply_for, task_index=0, seed=0):
    """One episode; returns the list of (reward, terminated, truncated, info) and the last info."""
    env.reset(seed=seed, options={"task_index": task_index})
    steps = []
    while True:
        _, reward, terminated, truncated, info = env.step(reply_for(env))
        steps.append((reward, terminated, truncated, info))
        if terminated or truncated:
            return steps, info


def code_reply(code):
    return f"Here you go.\n\n```python\n{code}\n```"


# -- loading -------------------------------------------------------------------------------


def test_humaneval_loads_all_164_problems_from_the_package():
    tasks = load_code_tasks("humaneval")
    assert len(tasks) == 164
    assert [task.task_id for task in tasks[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert all(task.kind == "function" and task.reference and task.entry_point and task.check for task in tasks)
    assert load_code_tasks("humaneval") is tasks, "datasets are cached, not re-read per env"


def test_jsonl_and_parquet_stdio_files_load_the_same_tasks(tmp_path):
    from_jsonl = load_code_tasks(write_jsonl(tmp_path / "apps.jsonl", STDIO_ROWS))
    from_parquet = load_code_tasks(write_parquet(tmp_path / "apps.parquet", STDIO_ROWS))
    assert len(from_jsonl) == len(from_parquet) == 3
    for a, b in zip(from_jsonl, from_parquet):
        assert (a.question, a.test_inputs, a.test_outputs, a.reference) == (
            b.question,
            b.test_inputs,
            b.test_outputs,
            b.reference,
        )
    assert from_jsonl[0].task_id == "apps/0" and from_jsonl[0].kind == "stdio"
    assert from_jsonl[0].test_inputs == ("1 2\n", "10 -3\n", "0 0\n") and from_jsonl[2].reference is None


def test_test_lists_stored_as_json_strings_are_read(tmp_path):
    row = {"question": "q", "test_input": json.dumps(["1\n", "2\n"]), "test_output": json.dumps(["1", "2"])}
    (task,) = load_code_tasks(write_jsonl(tmp_path / "lcb.jsonl", [row]))
    assert task.test_inputs == ("1\n", "2\n") and task.test_outputs == ("1", "2")


def test_missing_columns_are_named(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "inputs": ["1"]}])
    with pytest.raises(DataError, match=r"missing column\(s\) 'test_input', 'test_output' \(found: inputs, question\)"):
        load_code_tasks(path)
    path = write_parquet(tmp_path / "bad.parquet", [{"prompt": "q", "test_input": ["1"], "test_output": ["1"]}])
    with pytest.raises(DataError, match="missing column\\(s\\) 'question'"):
        CodeEnv(dataset=path)


def test_empty_missing_and_broken_datasets_are_data_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl has no rows"):
        load_code_tasks(str(tmp_path / "empty.jsonl"))
    schema = pyarrow.schema(
        [
            ("question", pyarrow.string()),
            ("test_input", pyarrow.list_(pyarrow.string())),
            ("test_output", pyarrow.list_(pyarrow.string())),
        ]
    )
    pyarrow.parquet.write_table(schema.empty_table(), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="has no rows"):
        load_code_tasks(str(tmp_path / "empty.parquet"))
    with pytest.raises(DataError, match="Dataset file not found: .*nowhere.jsonl"):
        pettingllms.make("code_env", dataset=str(tmp_path / "nowhere.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"question": "q"}\n{not json\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_code_tasks(str(tmp_path / "broken.jsonl"))
    uneven = {"question": "q", "test_input": ["1", "2"], "test_output": ["1"]}
    with pytest.raises(DataError, match="row 0: needs as many test_output as test_input"):
        load_code_tasks(write_jsonl(tmp_path / "uneven.jsonl", [uneven]))


# -- parsing -------------------------------------------------------------------------------


def test_extract_code_takes_the_last_python_or_plain_block():
    assert extract_code("```python\na = 1\n```\nthen\n```py\nb = 2\n```") == "b = 2"
    assert extract_code("```\nc = 3\n```") == "c = 3"
    assert extract_code("```python\nd = 4\n```\n```text\nnot code\n```") == "d = 4"
    for text in ("", "no code at all", "```python\nunterminated", "```python\n```", "```\n" * 500):
        assert extract_code(text) is None


def test_parse_test_cases_pairs_input_and_output_blocks():
    text = "```input\n1 2\n```\n```output\n3\n```\nand\n```input\n5 5\n```\n```output\n10\n```\n```input\n9\n```"
    assert parse_test_cases(text) == (("1 2\n", "3\n"), ("5 5\n", "10\n"))
    assert parse_test_cases("```python\nassert f(1) == 2\n```") == ()


def test_outputs_are_compared_line_by_line_with_whitespace_normalized():
    assert outputs_match("1 2\n3\n", "1  2   \n3")
    assert outputs_match("\n7\n\n", "7")
    assert not outputs_match("1 2", "12") and not outputs_match("3", "3\n4")


# -- the ground truth and the expert -------------------------------------------------------


def _expert_episode(index):
    env = CodeEnv(timeout_s=30.0)  # generous: the full suite may run on a loaded machine
    steps, info = play(env, lambda e: e.expert_reply(), task_index=index)
    return len(steps), info


# Runs every program of stdin's JSON list in one sandboxed process: 164 separate runs of a
# `return None` body would double this test's time and show nothing more.
RUN_EACH = """
import contextlib, io, json, sys
passed = []
for index, program in enumerate(json.load(sys.stdin)):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(program, f"task{index}", "exec"), {"__name__": "__main__"})
        passed.append(index)
    except BaseException:
        pass
print(json.dumps(passed))
"""


@pytest.mark.slow  # ~30-60 s on 2 cores: two sandboxed runs per problem, four at a time
def test_expert_solves_all_164_humaneval_problems_and_wrong_programs_fail():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_expert_episode, range(164)))
    failures = [(info["task_id"], info["details"]) for _, info in results if info["success"] is not True]
    assert not failures, f"reference solutions that failed their own check: {failures[:3]}"
    assert all(
        count == 2 and info["agent_success"] == {"code_generator": True, "test_generator": True}
        for count, info in results
    ), "the expert pair agrees in the first round"

    from pettingllms.sandbox import run_python

    env, wrong_programs, right_programs = CodeEnv(), [], []
    for index in range(164):
        env.reset(seed=0, options={"task_index": index})
        for wrong, programs in ((True, wrong_programs), (False, right_programs)):
            solution = extract_code(env.expert_reply(wrong=wrong))
            programs.append(function_program(env.task, solution, check_tests(env.task)))
    result = run_python(RUN_EACH, stdin=json.dumps(wrong_programs + right_programs), timeout_s=120, memory_mb=2048)
    assert result.ok, result.stderr[-2000:]
    passed = json.loads(result.stdout)
    assert [index for index in passed if index < 164] == [], "the wrong expert's program passed these checks"
    assert passed == list(range(164, 328)), "the harness itself works: every reference passes in it too"


@pytest.mark.slow
def test_wrong_expert_fails_and_the_episode_runs_its_turn_budget():
    env = pettingllms.make("code_env", max_turns=2)
    for index in (0, 12, 57):
        steps, info = play(env, lambda e: e.expert_reply(wrong=True), task_index=index)
        assert info["success"] is False and len(steps) == 4 and steps[-1][2] is True
        assert info["agent_success"] == {"code_generator": False, "test_generator": False}
        assert info["details"]["reference_agreement"]["passed"] is False


def test_right_code_with_wrong_tests_succeeds_without_ending_early():
    env = pettingllms.make("code_env", max_turns=2)
    steps, info = play(env, lambda e: e.expert_reply(wrong=e.agent_selection == "test_generator"), task_index=3)
    assert [terminated for _, terminated, _, _ in steps] == [False] * 4
    assert info["success"] is True and info["agent_success"]["test_generator"] is False
    assert steps[1][3]["details"]["generated_tests"]["passed"] is False


def test_agents_see_each_others_work_and_its_results():
    env = pettingllms.make("code_env")
    env.reset(seed=0, options={"task_index": 2})
    obs, *_ = env.step(env.expert_reply(wrong=True))
    assert obs[0]["role"] == "system" and "test generator" in obs[0]["content"]
    assert "return None" in obs[1]["content"], "the test generator sees the latest solution"
    obs, *_ = env.step(env.expert_reply())
    assert "assert truncate_number(3.5) == 0.5" in obs[1]["content"], "the code generator sees the tests"
    assert "Failed" in obs[1]["content"] and "AssertionError" in obs[1]["content"]
    assert "pettingllms_sandbox_" not in obs[1]["content"], "random sandbox paths are scrubbed"


@pytest.mark.slow
def test_stdio_expert_and_wrong_expert(stdio_file):
    env = pettingllms.make("code_env", dataset=stdio_file)
    for index in (0, 1):
        steps, info = play(env, lambda e: e.expert_reply(), task_index=index)
        assert info["success"] is True and len(steps) == 2, info
        _, info = play(env, lambda e: e.expert_reply(wrong=True), task_index=index)
        assert info["success"] is False
        assert info["details"]["generated_tests"]["failed_case"] == 0
    # Without a reference, a solution that passes the ground truth is what the tests must agree with.
    env.reset(seed=0, options={"task_index": 2})
    env.step(code_reply("print(len(input().split()))"))
    _, _, terminated, _, info = env.step("```input\nx y\n```\n```output\n2\n```")
    assert terminated and info["success"] is True and info["agent_success"]["test_generator"] is True


@pytest.mark.slow
def test_single_agent_variant_sees_only_pass_or_fail(stdio_file):
    env = pettingllms.make("code_single_agent", dataset=stdio_file, max_turns=3)
    assert env.possible_agents == ("code_generator",)
    steps, info = play(env, lambda e: e.expert_reply())
    assert len(steps) == 1 and steps[0][1] is True and info["success"] is True
    env.reset(seed=0, options={"task_index": 0})
    obs, *_ = env.step(code_reply("print(1)"))
    assert "failed the hidden tests: it gave a wrong result" in obs[1]["content"]
    assert "10 -3" not in obs[1]["content"], "the hidden tests are never shown"
    obs, *_ = env.step(code_reply("print(undefined_name)"))
    assert "failed the hidden tests: it raised NameError" in obs[1]["content"]
    _, _, terminated, truncated, info = env.step(code_reply(SUM_SOLUTION))
    assert terminated and not truncated and info["success"] is True


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["", "   ", "I would loop.", "```python\ndef f(:", "\x00\ud800", "a" * 50_000])
def test_a_reply_without_a_code_block_is_an_invalid_action(reply):
    env = pettingllms.make("code_env")
    env.reset(seed=0, options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step(reply)
    assert info["valid"] is False and "no ```python code block" in info["parse_error"]
    assert reward == 0.0 and not terminated and not truncated and info["agent"] == "test_generator"
    assert obs[-1]["role"] == "user"


@pytest.mark.parametrize(
    "reply, why",
    [
        ("no tests", "no ```python block of asserts"),
        ("```python\nassert f(1) ==\n```", "not valid Python"),
        ("```python\nprint('fine')\n```", "no assert statement"),
    ],
)
def test_unusable_tests_are_an_invalid_action(reply, why):
    env = pettingllms.make("code_env")
    env.reset(seed=0, options={"task_index": 0})
    env.step(env.expert_reply())
    _, _, terminated, _, info = env.step(reply)
    assert info["valid"] is False and why in info["parse_error"] and not terminated


def test_stdio_tests_need_input_output_pairs(stdio_file):
    env = pettingllms.make("code_env", dataset=stdio_file)
    env.reset(seed=0, options={"task_index": 0})
    env.step(code_reply(SUM_SOLUTION))
    _, _, _, _, info = env.step("```python\nassert True\n```")
    assert info["valid"] is False and "```input block followed by an ```output block" in info["parse_error"]


def _network_is_isolated():
    from pettingllms.sandbox import run_python

    return run_python("pass").network_isolated


HOSTILE_PROGRAMS = {  # name: (program, what the logged run must show)
    "infinite loop": ("while True:\n    pass", lambda run: run["timed_out"] is True),
    "memory bomb": (
        "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 26))",
        lambda run: "MemoryError" in run["stderr_tail"],
    ),
    "huge print": (
        "import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))",
        lambda run: run["stopped_for"] == "output_limit",
    ),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", lambda run: run["returncode"] != 0),
    "reads a secret": (
        "import os\nprint(os.environ['PETTINGLLMS_TEST_SECRET'])",
        lambda run: "KeyError" in run["stderr_tail"],
    ),
    "network": (
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)\nprint('ok')",
        lambda run: "Error" in run["stderr_tail"],
    ),
}


SLOW_HOSTILE_PROGRAMS = ("infinite loop", "memory bomb", "fork bomb")
"""3-7 s on 2 cores: they run until the 3 s time limit, until memory runs out, or until the
process limit stops the forks (slower the busier the machine)."""


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_HOSTILE_PROGRAMS else name
        for name in HOSTILE_PROGRAMS
    ],
)
def test_hostile_solutions_fail_cleanly_with_the_reason_logged(tmp_path, monkeypatch, request, name):
    """Each program would print 'ok' (the expected output) if the sandbox let it do its thing."""
    code, explains = HOSTILE_PROGRAMS[name]
    if name == "network" and not _network_is_isolated():
        pytest.skip("the sandbox has no network namespace here (needs root / CAP_SYS_ADMIN)")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    request.addfinalizer(server.close)
    monkeypatch.setenv("PETTINGLLMS_TEST_SECRET", "ok")
    path = write_jsonl(
        tmp_path / "ok.jsonl",
        [{"question": "Print ok.", "test_input": [""], "test_output": ["ok"], "solution": "print('ok')"}],
    )
    env = pettingllms.make("code_env", dataset=path, timeout_s=3.0, max_turns=1)
    env.reset(seed=0, options={"task_index": 0})
    started = time.monotonic()
    _, reward, terminated, _, info = env.step(code_reply(code.replace("PORT", str(server.getsockname()[1]))))
    assert time.monotonic() - started < 30
    truth = info["details"]["ground_truth"]
    assert info["valid"] is True and reward == 0.0 and not terminated
    assert truth["passed"] is False and explains(truth), truth
    assert len(json.dumps(info)) < 20_000, "the rollout log keeps a tail, never the flood"
    with pytest.raises(BlockingIOError):
        server.accept()
    _, _, _, _, info = env.step(env.expert_reply())
    assert info["success"] is False and info["agent"] is None
    # The same env goes on to the next episode as if nothing happened.
    _, info = play(env, lambda e: e.expert_reply())
    assert info["success"] is True


@pytest.mark.slow
def test_a_looping_humaneval_solution_times_out():
    env = pettingllms.make("code_env", timeout_s=2.0)
    env.reset(seed=0, options={"task_index": 0})
    looping = "def has_close_elements(numbers, threshold):\n    while True:\n        pass"
    _, _, _, _, info = env.step(code_reply(looping))
    assert info["details"]["ground_truth"]["timed_out"] is True and info["agent_success"]["code_generator"] is False


# -- episodes and task order ---------------------------------------------------------------


def test_task_index_walks_the_dataset_in_order(stdio_file):
    env = pettingllms.make("code_env", dataset=stdio_file)
    ids = [env.reset(seed=0, options={"task_index": index})[1]["task_id"] for index in range(7)]
    assert ids == ["tasks/0", "tasks/1", "tasks/2"] * 2 + ["tasks/0"]


def test_shuffle_is_a_seeded_permutation():
    walk = lambda env: [env.reset(options={"task_index": i})[1]["task_id"] for i in range(164)]  # noqa: E731
    shuffled = walk(pettingllms.make("code_env", shuffle=True))
    assert sorted(shuffled) == sorted(walk(pettingllms.make("code_env")))
    assert shuffled != [f"HumanEval/{i}" for i in range(164)]
    assert shuffled == walk(pettingllms.make("code_env", shuffle=True))
    assert shuffled != walk(pettingllms.make("code_env", shuffle=True, shuffle_seed=1))


@pytest.mark.slow
def test_same_seed_same_episode():
    def run(seed):
        env = pettingllms.make("code_env")
        obs, info = env.reset(seed=seed)
        trace = [(obs, info["task_id"])]
        for wrong in (True, True, False, False):
            trace.append(env.step(env.expert_reply(wrong=wrong)))
        return trace

    assert run(5) == run(5), "same task, same prompts, same rewards and details"
    env = pettingllms.make("code_env")
    assert env.reset(seed=5)[0] != env.reset(seed=6)[0]


def test_registered_with_agents_and_task_source():
    env = pettingllms.make("code_env")
    assert env.possible_agents == ("code_generator", "test_generator") and env.max_turns == 3
    assert env.has_expert and "HumanEval" in env.task_source
    assert "## Success and rewards" in CodeEnv.__doc__


def test_exiting_early_does_not_fake_a_pass():
    env = pettingllms.make("code_env", max_turns=1)
    env.reset(seed=0, options={"task_index": 0})
    _, _, _, _, info = env.step(code_reply("import sys\nsys.exit(0)"))
    truth = info["details"]["ground_truth"]
    assert truth["passed"] is False and truth["returncode"] == 0 and truth["tests_finished"] is False
    _, _, _, _, info = env.step("```python\nimport os\nos._exit(0)\nassert False\n```")
    assert info["agent_success"]["test_generator"] is False, "tests that exit early agree with nothing"
