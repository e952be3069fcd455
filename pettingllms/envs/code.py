"""The coding environment: a code generator and a test generator improve each other's work."""

from __future__ import annotations

import ast
import re
from typing import Any

import numpy as np

from pettingllms.envs.base import Message, TurnBasedTextEnv, TurnResult
from pettingllms.envs.code_tasks import (
    CodeTask,
    check_tests,
    function_program,
    load_code_tasks,
    outputs_match,
    sample_asserts,
)
from pettingllms.exceptions import ConfigError, InfrastructureError

MAX_GENERATED_TESTS = 10
TAIL_CHARS = 600
TestCases = tuple[tuple[str, str], ...]

# Fences open at the start of a line; anchoring and possessive quantifiers keep the scan linear
# on replies full of backticks.
_FENCE = re.compile(r"^[ \t]*+```[ \t]*+([\w+-]*+)[^\n]*+\n(.*?)```", re.DOTALL | re.MULTILINE)


def extract_code(text: str) -> str | None:
    """The last ```python (or unlabelled) fenced block of a reply; None if there is none."""
    blocks = [body for language, body in _FENCE.findall(text) if language.lower() in ("", "python", "py", "python3")]
    return blocks[-1].lstrip("\n").rstrip() if blocks and blocks[-1].strip() else None


def parse_test_cases(text: str) -> TestCases:
    """The ```input / ```output block pairs of a reply, in order (at most MAX_GENERATED_TESTS)."""
    blocks = [(language.lower(), body) for language, body in _FENCE.findall(text)]
    cases, pending = [], None
    for language, body in blocks:
        if language == "input":
            pending = body
        elif language == "output" and pending is not None:
            cases.append((pending, body))
            pending = None
    return tuple(cases[:MAX_GENERATED_TESTS])


def _render_case(stdin: str, expected: str) -> str:
    stdin, expected = stdin.rstrip("\n"), expected.rstrip("\n")
    return f"```input\n{stdin}\n```\n```output\n{expected}\n```"


def _tail(text: str) -> str:
    return text if len(text) <= TAIL_CHARS else "..." + text[-TAIL_CHARS:]


def run_program(program: str, stdin: str = "", timeout_s: float = 10.0) -> dict[str, Any]:
    """Run model-written code in the sandbox; what happened, as plain values for the rollout log.

    `ok` means it exited with status 0 in time. A sandbox that cannot start at all is not the
    program's fault: it raises `InfrastructureError('sandbox_error')`, so the episode is recorded
    as an error (and played again on resume) instead of as a failure of the model.
    """
    from pettingllms.sandbox import WORKDIR_PREFIX, SandboxError, run_python

    try:
        result = run_python(program, stdin=stdin, timeout_s=timeout_s)
    except SandboxError as error:
        raise InfrastructureError("sandbox_error", f"the sandbox could not start: {error}") from None
    # The run's temporary directory is random: drop it so identical runs log identical text.
    stderr = re.sub(rf"/\S*{WORKDIR_PREFIX}[^/\s]*/", "", result.stderr)
    return {
        "ok": result.ok,
        "returncode": result.returncode,
        "timed_out": result.timed_out,
        "stopped_for": result.stopped_for,
        "stdout": result.stdout,
        "stderr_tail": _tail(stderr),
    }


def _why(run: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run that explain a failure."""
    return {key: run[key] for key in ("returncode", "timed_out", "stopped_for", "stderr_tail")}


def _failure_kind(result: dict[str, Any]) -> str:
    """How a run failed, in words that do not reveal the hidden tests (only the error's type)."""
    if result["timed_out"]:
        return "it ran out of time"
    if result["stopped_for"] == "output_limit":
        return "it printed far too much"
    if result.get("tests_finished") is False and result["returncode"] == 0:
        return "it exited before the tests finished"
    lines = result["stderr_tail"].strip().splitlines()
    error = lines[-1].split(":")[0].strip() if lines else ""
    if result["returncode"] == 0 or error == "AssertionError":
        return "it gave a wrong result"
    return f"it raised {error}" if error.isidentifier() else f"it exited with status {result['returncode']}"


class CodeEnv(TurnBasedTextEnv):
    """
    ## Description
    Two agents solve a programming task together. The `code_generator` writes a solution, the
    `test_generator` writes tests for it; each sees the other's latest work and what running
    it gave, and may revise its own. The task's own (ground-truth) tests stay hidden: they
    decide success.

    ## Agents
    `code_generator`, then `test_generator`, once each per round.

    ## Observation
    Chat messages `[system, user]`: the role and reply format, then the task, the latest
    solution, the latest tests and the result of running that solution on those tests.

    ## Action format
    - `code_generator`: one ```python block with the whole solution (function tasks: the
      function with its imports; stdio tasks: a program reading stdin, writing stdout).
    - `test_generator`, function tasks: one ```python block of `assert` statements calling the
      function by name. Stdio tasks: 1-10 pairs of an ```input block and an ```output block.
    A reply without the expected blocks is an invalid action (reward 0, the episode goes on).

    ## Success and rewards
    Success: the latest solution passes every ground-truth test of the task (HumanEval's
    `check`, or all input/output pairs), run in the sandbox. `code_generator`: reward 1 and
    agent success when its solution passes them. `test_generator`: reward 1 and agent success
    when its tests agree with the reference solution (the task's, else the latest solution that
    passes the ground truth); no reference, no agent success. `info["details"]` keeps every run:
    return code, time-out, a tail of stderr, the first failing case.

    ## Episode end
    Terminated as soon as the latest solution passes both the ground truth and the test
    generator's latest tests (the two agents agree and are right); truncated after
    `max_turns` rounds.

    ## Arguments
    `max_turns` (default 3), `dataset` ("humaneval" or a .jsonl/.parquet stdin/stdout task
    file), `shuffle` (walk the tasks in a seeded random order), `split` (unused: a file is one
    split), `timeout_s` (per program run), `shuffle_seed`. `reset(options={"task_index": i})`
    plays task i mod N; without it the task is drawn from the seed.

    ## Version history
    v0: first version.
    """

    possible_agents = ("code_generator", "test_generator")
    default_max_turns = 3
    task_source = "HumanEval (bundled) or stdin/stdout task files"

    @property
    def has_test_split(self) -> bool:
        return False  # a task file is one split: evaluate on another file (env.dataset=...)

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        dataset: str = "humaneval",
        shuffle: bool = False,
        split: str = "train",
        timeout_s: float = 10.0,
        shuffle_seed: int = 0,
    ):
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        if split not in ("train", "test"):
            raise ConfigError(f"env.split must be 'train' or 'test', got {split!r}.")
        self.dataset, self.split, self.timeout_s = dataset, split, float(timeout_s)
        self.tasks: list[CodeTask] = load_code_tasks(dataset)
        self.order = np.random.default_rng(shuffle_seed).permutation(len(self.tasks)) if shuffle else None
        self.task: CodeTask = self.tasks[0]

    # -- state ----------------------------------------------------------------------------

    def _reset_task(self, options: dict[str, Any]) -> None:
        if options.get("task_index") is None:
            index = int(self.np_random.integers(len(self.tasks)))
        else:
            index = int(options["task_index"]) % len(self.tasks)
        if self.order is not None:
            index = int(self.order[index])
        self.task = self.tasks[index]
        self.task_id = self.task.task_id
        self.solution: str | None = None
        self.solution_passes = False
        self.tests: str | TestCases | None = None
        self.cross_result: dict[str, Any] | None = None
        self._runs: dict[tuple[str, str], Any] = {}
        # Printed after the tests; unknown to the model, so exiting early cannot fake a pass.
        self._marker = f"tests-done-{int(self.np_random.integers(1 << 62)):x}"

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        if agent == "code_generator":
            return self._apply_solution(text)
        return self._apply_tests(text)

    def _apply_solution(self, text: str) -> TurnResult:
        code = extract_code(text)
        if code is None:
            return TurnResult(valid=False, parse_error="no ```python code block in the reply", agent_success=False)
        self.solution = code
        truth = self._run_ground_truth(code)
        self.solution_passes = truth["passed"]
        details: dict[str, Any] = {"ground_truth": truth}
        if self.tests is not None:
            self.cross_result = details["generated_tests"] = self._run_generated(code, self.tests)
        return TurnResult(
            reward=float(self.solution_passes), agent_success=self.solution_passes, done=self._agreed(), details=details
        )

    def _apply_tests(self, text: str) -> TurnResult:
        tests, error = self._parse_tests(text)
        if tests is None:
            return TurnResult(valid=False, parse_error=error, agent_success=False)
        self.tests = tests
        details: dict[str, Any] = {}
        reference = self.task.reference or (self.solution if self.solution_passes else None)
        agreed = None
        if reference is not None:
            details["reference_agreement"] = self._run_generated(reference, tests)
            agreed = details["reference_agreement"]["passed"]
        if self.solution is not None:
            self.cross_result = details["generated_tests"] = self._run_generated(self.solution, tests)
        return TurnResult(reward=float(bool(agreed)), agent_success=agreed, done=self._agreed(), details=details)

    def _parse_tests(self, text: str) -> tuple[str | TestCases | None, str | None]:
        """The tests of a reply (assert code, or input/output cases), else None and why."""
        if self.task.kind == "stdio":
            cases = parse_test_cases(text)
            return (cases, None) if cases else (None, "no ```input block followed by an ```output block in the reply")
        code = extract_code(text)
        if code is None:
            return None, "no ```python block of asserts in the reply"
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:  # nesting too deep for the parser
            return None, f"the tests are not valid Python ({type(error).__name__}: {error})"
        if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
            return None, "the tests hold no assert statement"
        return code, None

    def _agreed(self) -> bool:
        return self.solution_passes and self.cross_result is not None and self.cross_result["passed"]

    def _episode_success(self) -> bool:
        return self.solution_passes

    # -- running programs -----------------------------------------------------------------

    def _run(self, program: str, stdin: str = "") -> dict[str, Any]:
        """One sandboxed run, remembered for the episode (the expert's solution is the reference)."""
        key = (program.lstrip("\n").rstrip(), stdin)
        if key not in self._runs:
            self._runs[key] = run_program(key[0], stdin, self.timeout_s)
        return self._runs[key]

    def _run_ground_truth(self, code: str) -> dict[str, Any]:
        if self.task.kind == "function":
            return self._run_function_tests(code, check_tests(self.task))
        return self._run_cases(code, tuple(zip(self.task.test_inputs, self.task.test_outputs)))

    def _run_generated(self, code: str, tests: str | TestCases) -> dict[str, Any]:
        if isinstance(tests, str):
            return self._run_function_tests(code, tests)
        return self._run_cases(code, tests)

    def _run_function_tests(self, code: str, tests: str) -> dict[str, Any]:
        run = self._run(function_program(self.task, code, tests, self._marker))
        finished = run["stdout"].rstrip().endswith(self._marker)
        return {"passed": run["ok"] and finished, **_why(run), "tests_finished": finished}

    def _run_cases(self, code: str, cases: TestCases) -> dict[str, Any]:
        """Run `code` on each case in order; stop at the first failure."""
        for number, (stdin, expected) in enumerate(cases):
            run = self._run(code, stdin)
            if not run["ok"] or not outputs_match(expected, run["stdout"]):
                return {
                    "passed": False,
                    "cases": len(cases),
                    "failed_case": number,
                    "input": _tail(stdin),
                    "expected": _tail(expected),
                    "got": _tail(run["stdout"]),
                    **_why(run),
                }
        return {"passed": True, "cases": len(cases)}

    # -- prompts --------------------------------------------------------------------------

    def _prompt(self, agent: str) -> list[Message]:
        if agent == "code_generator":
            return [{"role": "system", "content": self._code_system()}, {"role": "user", "content": self._code_user()}]
        return [{"role": "system", "content": self._tests_system()}, {"role": "user", "content": self._tests_user()}]

    def _code_system(self) -> str:
        if self.task.kind == "function":
            form = (
                f"Write the complete function `{self.task.entry_point}`, with the imports it needs, in one "
                f"```python code block."
            )
        else:
            form = (
                "Write a complete program that reads standard input and writes standard output, in one "
                "```python code block."
            )
        return (
            f"You are the code generator of a team solving a programming task; a test generator tests your code. {form}"
        )

    def _tests_system(self) -> str:
        if self.task.kind == "function":
            form = (
                f"Reply with one ```python code block of assert statements that call `{self.task.entry_point}`, "
                f"for example `assert {self.task.entry_point}(...) == ...`."
            )
        else:
            form = (
                "Reply with 1 to 10 test cases, each an ```input block holding the standard input followed by an "
                "```output block holding the exact expected output."
            )
        return (
            "You are the test generator of a team solving a programming task: write tests that a correct "
            f"solution passes and a wrong one fails. {form}"
        )

    def _task_section(self) -> str:
        return "## Task\n" + self.task.question.strip("\n")

    def _code_user(self) -> str:
        parts = [self._task_section()]
        if self.solution is not None:
            parts.append(f"## Your latest solution\n```python\n{self.solution}\n```")
        if self.tests is not None:
            parts.append(f"## The test generator's tests\n{self._render_tests(self.tests)}")
        if self.cross_result is not None:
            parts.append(f"## Your latest solution on those tests\n{self._render_result(self.cross_result)}")
            parts.append(
                "Fix your solution where a test shows a real bug (a test itself may be wrong), and reply "
                "with the complete solution in one ```python block."
            )
        else:
            parts.append("Reply with your solution in one ```python block.")
        return "\n\n".join(parts)

    def _tests_user(self) -> str:
        parts = [self._task_section()]
        if self.solution is not None:
            parts.append(f"## The code generator's latest solution\n```python\n{self.solution}\n```")
        if self.tests is not None:
            parts.append(f"## Your latest tests\n{self._render_tests(self.tests)}")
        if self.cross_result is not None:
            parts.append(f"## That solution on your tests\n{self._render_result(self.cross_result)}")
        parts.append("Reply with your tests in the format above; fix any test whose expected result is wrong.")
        return "\n\n".join(parts)

    @staticmethod
    def _render_tests(tests: str | TestCases) -> str:
        if isinstance(tests, str):
            return f"```python\n{tests}\n```"
        return "\n".join(_render_case(stdin, expected) for stdin, expected in tests)

    @staticmethod
    def _render_result(result: dict[str, Any]) -> str:
        if result["passed"]:
            return "All tests passed."
        if result.get("tests_finished") is False and result["returncode"] == 0:
            return "Failed: the program exited before the tests finished."
        if result["timed_out"]:
            why = "it ran out of time"
        elif result["stopped_for"] == "output_limit":
            why = "it printed far too much and was stopped"
        elif result["returncode"] != 0:
            why = f"it exited with status {result['returncode']}:\n{result['stderr_tail']}"
        else:
            why = "its output differs"
        if "failed_case" not in result:
            return f"Failed: {why}"
        return (
            f"Failed test case {result['failed_case'] + 1} of {result['cases']}: {why}\n"
            f"input:\n{result['input']}\nexpected:\n{result['expected']}\ngot:\n{result['got']}"
        )

    # -- the expert -----------------------------------------------------------------------

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        if agent == "code_generator":
            return self._expert_solution(wrong)
        return self._expert_tests(wrong)

    def _expert_solution(self, wrong: bool) -> str:
        if wrong:
            # Plausible mistakes: a function that returns nothing, a program that forgets to print.
            code = (
                f"{self.task.question}    return None\n"
                if self.task.kind == "function"
                else "import sys\n\nnumbers = sys.stdin.read().split()\n"
            )
        elif self.task.reference is None:
            return "This task ships no reference solution, so the expert cannot write one."
        else:
            code = self.task.reference
        code = code.lstrip("\n").rstrip()
        return f"Here is the solution.\n\n```python\n{code}\n```"

    def _expert_tests(self, wrong: bool) -> str:
        task = self.task
        if task.kind == "stdio":
            cases = list(zip(task.test_inputs, task.test_outputs))[:3]
            if wrong:
                cases = [(stdin, expected.rstrip("\n") + "\n0\n") for stdin, expected in cases[:1]]
            return "Test cases:\n\n" + "\n".join(_render_case(stdin, expected) for stdin, expected in cases)
        asserts = sample_asserts(task)
        if wrong:
            tests = "\n".join(f"assert not ({ast.unparse(ast.parse(line).body[0].test)})" for line in asserts[:1])
            tests = tests or "assert False"
        else:
            tests = "\n".join(asserts) or check_tests(task)
        return f"Tests for `{task.entry_point}`:\n\n```python\n{tests.strip()}\n```"


class CodeSingleAgentEnv(CodeEnv):
    """
    ## Description
    `CodeEnv` with the code generator alone: it writes a solution, and on a later turn sees
    its previous solution and whether it passed the hidden tests (only pass/fail and how it
    failed, never the tests themselves).

    ## Agents
    `code_generator`.

    ## Success and rewards
    As in `CodeEnv`: the latest solution passes every ground-truth test; reward 1 when it does.

    ## Episode end
    Terminated when a solution passes the ground truth; truncated after `max_turns` replies.

    ## Arguments / Version history
    As `CodeEnv`. v0: first version.
    """

    possible_agents = ("code_generator",)

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        result = self._apply_solution(text)
        if result.valid:
            self.last_truth = result.details["ground_truth"]
        result.done = self.solution_passes
        return result

    def _reset_task(self, options: dict[str, Any]) -> None:
        super()._reset_task(options)
        self.last_truth: dict[str, Any] | None = None

    def _code_user(self) -> str:
        parts = [self._task_section()]
        if self.solution is not None and self.last_truth is not None:
            parts.append(
                f"## Your latest solution\n```python\n{self.solution}\n```\n\n"
                f"It failed the hidden tests: {_failure_kind(self.last_truth)}."
            )
            parts.append("Find the bug and reply with the corrected complete solution in one ```python block.")
        else:
            parts.append("Reply with your solution in one ```python block.")
        return "\n\n".join(parts)
