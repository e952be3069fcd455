"""The math environment: the problem generator, task files, math-verify, the expert, bad input."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow
import pyarrow.parquet
import pytest

import pettingllms
from pettingllms.envs.math import MathEnv, printed_answer
from pettingllms.envs.math_tasks import (
    PROBLEM_KINDS,
    answers_match,
    extract_boxed,
    generate_problem,
    load_math_tasks,
    wrong_answer,
)
from pettingllms.exceptions import DataError

ROWS = [
    {"question": "What is 6 times 7?", "answer": "42"},
    {"question": "What is half of 1?", "answer": "\\frac{1}{2}"},
    {
        "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
        "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72",
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_parquet(path, rows):
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return str(path)


def play(env, reply_for, task_index=0, seed=0):
    env.reset(seed=seed, options={"task_index": task_index})
    steps = []
    while True:
        _, reward, terminated, truncated, info = env.step(reply_for(env))
        steps.append((reward, terminated, truncated, info))
        if terminated or truncated:
            return steps, info


def program(code):
    return f"```python\n{code}\n```"


# -- math-verify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, answer",
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("2", "2.0"),
        ("1234", "1,234"),
        ("-\\frac{3}{4}", "-3/4"),
        ("\\frac{3}{4}", "\\dfrac{3}{4}"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("1024", "2^{10}"),
        ("72", "72"),
    ],
)
@pytest.mark.slow
def test_math_verify_accepts_equivalent_forms(gold, answer):
    assert answers_match(gold, answer)


@pytest.mark.parametrize(
    "gold, answer",
    [
        ("\\frac{1}{2}", "0.6"),
        ("2", "3"),
        ("\\frac{1}{3}", "0.33"),
        ("72", "hello"),
        ("5", ""),
        ("", "5"),
        ("5", "x" * 5000),
    ],
)
def test_math_verify_rejects_wrong_answers(gold, answer):
    assert not answers_match(gold, answer)


@pytest.mark.slow  # waits out its 3 s verification time limit
def test_verification_never_hangs_even_off_the_main_thread():
    """math-verify's own time-out is a signal alarm, which only works in the main thread."""
    outcome = {}

    def verify_in_worker():
        started = time.monotonic()
        outcome["matched"] = answers_match("2", "10^{10^{10}}", timeout_s=3.0)
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=verify_in_worker)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and outcome["matched"] is False and outcome["seconds"] < 30
    assert answers_match("\\frac{1}{2}", "0.5"), "verification works again afterwards"


def test_extract_boxed_takes_the_last_balanced_box():
    assert extract_boxed("so \\boxed{1} or rather \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_boxed("$\\boxed{\\{1, 2\\}}$") == "\\{1, 2\\}"
    assert extract_boxed("\\fbox{7}") == "7"
    for text in ("", "the answer is 5", "\\boxed{", "\\boxed{}", "\\boxed{1"):
        assert extract_boxed(text) is None


def test_printed_answer_is_the_last_nonempty_line():
    assert printed_answer("working...\n42\n\n") == "42" and printed_answer("  \n") is None


# -- the generator -------------------------------------------------------------------------


def test_generated_problems_are_seeded_and_splits_differ():
    assert generate_problem(17) == generate_problem(17)
    train = [generate_problem(i) for i in range(200)]
    test = [generate_problem(i, "test") for i in range(200)]
    assert len({t.question for t in train}) > 190
    assert sum(a.question != b.question for a, b in zip(train, test)) > 190
    assert train[0].task_id == "math-gen-train-0" and test[0].task_id == "math-gen-test-0"
    assert all(t.answer and "\\boxed" in t.solution and "print(" in t.program for t in train)
    phrases = [
        "Compute $",
        "as a fraction",
        "Solve for $x$",
        "committee",
        "runners",
        "remainder",
        "greatest common divisor",
        "least common multiple",
        "arithmetic sequence",
    ]
    assert all(any(phrase in t.question for t in train) for phrase in phrases), "every kind of problem appears"
    assert len(PROBLEM_KINDS) == 7
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        generate_problem(0, "validation")


@pytest.mark.slow  # ~3 s on 2 cores: 1,000 math-verify calls
def test_wrong_answers_are_rejected_for_500_problems():
    for index in range(500):
        task = generate_problem(index)
        assert answers_match(task.answer, extract_boxed(task.solution)), task
        assert not answers_match(task.answer, wrong_answer(task.answer)), task


def _expert_episode(index):
    steps, info = play(MathEnv(timeout_s=30.0), lambda e: e.expert_reply(), task_index=index)
    return len(steps), info


@pytest.mark.slow  # ~30 s on 2 cores: one sandboxed program per problem, four at a time
def test_expert_solves_500_generated_problems():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_expert_episode, range(500)))
    failures = [(info["task_id"], info["details"]) for _, info in results if info["success"] is not True]
    assert not failures, failures[:3]
    assert all(count == 2 and all(info["agent_success"].values()) for count, info in results)


def test_wrong_expert_fails():
    env = pettingllms.make("math_env", max_turns=2)
    for index in range(3):
        steps, info = play(env, lambda e: e.expert_reply(wrong=True), task_index=index)
        assert info["success"] is False and info["agent_success"] == {
            "reasoning_generator": False,
            "tool_generator": False,
        }
        assert len(steps) == 2 and steps[-1][1], "two wrong answers that agree still end the episode"


# -- files ---------------------------------------------------------------------------------


def test_question_answer_jsonl_loads_and_gsm8k_answers_are_extracted(tmp_path):
    tasks = load_math_tasks(write_jsonl(tmp_path / "gsm8k.jsonl", ROWS))
    assert [task.answer for task in tasks] == ["42", "\\frac{1}{2}", "72"]
    assert tasks[0].task_id == "gsm8k/0" and "#### 72" in tasks[2].solution
    env = pettingllms.make("math_env", dataset=str(tmp_path / "gsm8k.jsonl"))
    env.reset(options={"task_index": 2})
    reply = env.expert_reply()
    assert reply.endswith("\\boxed{72}$.") and "<<" not in reply


def test_question_solution_parquet_takes_the_boxed_answer(tmp_path):
    rows = [
        {"problem": "Compute $1+1$.", "solution": "Adding, we get $\\boxed{2}$."},
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
    ]
    path = write_parquet(tmp_path / "math.parquet", rows)
    assert [task.answer for task in load_math_tasks(path)] == ["2", "\\frac{1}{2}"]
    env = pettingllms.make("math_env", dataset=path)
    for index in range(2):
        _, info = play(env, lambda e: e.expert_reply(), task_index=index)
        assert info["success"] is True
        _, info = play(env, lambda e: e.expert_reply(wrong=True), task_index=index)
        assert info["success"] is False


def test_bad_math_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) 'answer' or 'solution' \(found: question\)"):
        load_math_tasks(write_jsonl(tmp_path / "a.jsonl", [{"question": "q"}]))
    with pytest.raises(DataError, match=r"missing column\(s\) 'question'"):
        load_math_tasks(write_jsonl(tmp_path / "b.jsonl", [{"text": "q", "answer": "1"}]))
    with pytest.raises(DataError, match="row 1: no answer found"):
        load_math_tasks(
            write_jsonl(
                tmp_path / "c.jsonl",
                [{"question": "q", "solution": "\\boxed{1}"}, {"question": "q", "solution": "no box"}],
            )
        )
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="has no rows"):
        pettingllms.make("math_env", dataset=str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="not found"):
        load_math_tasks(str(tmp_path / "missing.parquet"))


def test_file_tasks_are_walked_in_order_and_shuffled_by_seed(tmp_path):
    path = write_jsonl(tmp_path / "walk.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(5)])
    walk = lambda env: [env.reset(options={"task_index": i})[1]["task_id"] for i in range(10)]  # noqa: E731
    assert walk(pettingllms.make("math_env", dataset=path)) == [f"walk/{i % 5}" for i in range(10)]
    shuffled = walk(pettingllms.make("math_env", dataset=path, shuffle=True))
    assert sorted(shuffled[:5]) == [f"walk/{i}" for i in range(5)] and shuffled[5:] == shuffled[:5]
    assert shuffled == walk(pettingllms.make("math_env", dataset=path, shuffle=True))


# -- episodes ------------------------------------------------------------------------------


def test_generated_task_index_and_split_choose_the_problem():
    env = pettingllms.make("math_env")
    assert env.reset(options={"task_index": 7})[1]["task_id"] == "math-gen-train-7"
    test_env = pettingllms.make("math_env", split="test")
    assert test_env.reset(options={"task_index": 7})[1]["task_id"] == "math-gen-test-7"
    assert test_env.unwrapped.task == generate_problem(7, "test")


def test_same_seed_same_episode():
    def run(seed):
        env = pettingllms.make("math_env")
        obs, info = env.reset(seed=seed)
        trace = [(obs, info["task_id"])] + [env.step(env.expert_reply(wrong=w)) for w in (True, False, False)]
        assert trace[-1][2], "the agents agree in round 2"
        return trace

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]


def test_agents_see_each_others_answers_and_disagreement_goes_on():
    env = pettingllms.make("math_env", max_turns=2)
    env.reset(options={"task_index": 3})
    answer = env.unwrapped.task.answer
    obs, reward, terminated, _, info = env.step(f"I think it is \\boxed{{{answer}}}.")
    assert reward == 1.0 and not terminated and info["details"]["answer"] == answer
    assert f"\\boxed{{{answer}}}" in obs[1]["content"] and obs[0]["content"].startswith("You are the tool agent")
    obs, reward, terminated, _, info = env.step(program("print(12345)"))
    assert reward == 0.0 and not terminated and info["details"]["program"]["stdout"] == "12345\n"
    assert "print(12345)" in obs[1]["content"] and "It printed:\n12345" in obs[1]["content"]
    env.step(f"Still \\boxed{{{answer}}}.")
    _, _, terminated, truncated, info = env.step(program("print(0)"))
    assert truncated and not terminated
    assert info["success"] is True, "success is the reasoning agent's final boxed answer"
    assert info["agent_success"] == {"reasoning_generator": True, "tool_generator": False}


def test_invalid_replies_are_invalid_actions():
    env = pettingllms.make("math_env")
    for reply in ("", "The answer is 5.", "\\boxed{", "\\boxed{}", "\x00\ud800", "a" * 50_000):
        env.reset(options={"task_index": 0})
        obs, reward, terminated, truncated, info = env.step(reply)
        assert info["valid"] is False and "no \\boxed{...} answer" in info["parse_error"]
        assert reward == 0.0 and not terminated and not truncated and obs[-1]["role"] == "user"
    env.reset(options={"task_index": 0})
    env.step("\\boxed{1}")
    _, _, _, _, info = env.step("print(42) without a code block")
    assert info["valid"] is False and "no ```python code block" in info["parse_error"]


@pytest.mark.parametrize(
    "code, timeout_s, why",
    [
        ("while True:\n    pass", 2.0, lambda run: run["timed_out"]),
        # The others stop by themselves; a generous time limit keeps a loaded machine from
        # timing them out before they reach the limit under test.
        (
            "import sys\nwhile True:\n    sys.stdout.write('9' * 65536)",
            30.0,
            lambda run: run["stopped_for"] == "output_limit",
        ),
        (
            "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 26))",
            30.0,
            lambda run: "MemoryError" in run["stderr_tail"],
        ),
        ("raise SystemExit(3)", 30.0, lambda run: run["returncode"] == 3),
    ],
)
@pytest.mark.slow
def test_a_failing_tool_program_gives_no_answer_and_says_why(code, timeout_s, why):
    env = pettingllms.make("math_env", max_turns=1, timeout_s=timeout_s)
    env.reset(options={"task_index": 0})
    env.step(env.expert_reply())
    _, reward, terminated, truncated, info = env.step(program(code))
    run = info["details"]["program"]
    assert info["valid"] is True and info["details"]["answer"] is None and reward == 0.0
    assert run["ok"] is False and why(run), run
    assert truncated and not terminated and len(json.dumps(info)) < 20_000


def test_single_agent_variant_ends_at_the_first_boxed_answer():
    env = pettingllms.make("math_single_agent", max_turns=2)
    assert env.possible_agents == ("reasoning_generator",)
    steps, info = play(env, lambda e: e.expert_reply(), task_index=4)
    assert len(steps) == 1 and steps[0][1] and info["success"] is True
    env.reset(options={"task_index": 4})
    _, _, terminated, truncated, info = env.step("no idea")
    assert not terminated and not truncated and info["valid"] is False
    _, _, terminated, _, info = env.step(env.expert_reply(wrong=True))
    assert terminated and info["success"] is False


def test_registered_with_agents_and_task_source():
    env = pettingllms.make("math_env")
    assert env.possible_agents == ("reasoning_generator", "tool_generator") and env.max_turns == 3
    assert env.has_expert and "generator" in env.task_source
    assert "## Episode end" in MathEnv.__doc__
