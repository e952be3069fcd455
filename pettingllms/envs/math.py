"""The math environment: a reasoning agent and a tool-writing agent answer a problem until they agree."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pettingllms.envs.base import Message, TurnBasedTextEnv, TurnResult
from pettingllms.envs.code import extract_code, run_program
from pettingllms.envs.math_tasks import (
    MathTask,
    answers_match,
    extract_boxed,
    generate_problem,
    load_math_tasks,
    wrong_answer,
)
from pettingllms.exceptions import ConfigError

TAIL_CHARS = 600
GENERATED_INDEX_RANGE = 1_000_000
"""Without a task_index, a generated problem is drawn from this many."""


def _tail(text: str) -> str:
    return text if len(text) <= TAIL_CHARS else "..." + text[-TAIL_CHARS:]


def printed_answer(stdout: str) -> str | None:
    """A tool program's answer: the last non-empty line it printed."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _worked_solution(solution: str | None, answer: str) -> str:
    """The expert's reasoning reply: the task's own solution when it ends in a boxed answer or a
    GSM8K `#### answer` line (its `<<48/2=24>>` calculator notes dropped), else a one-liner."""
    if solution and extract_boxed(solution):
        return solution
    if solution and "####" in solution:
        steps = re.sub(r"<<[^>]*>>", "", solution.rsplit("####", 1)[0]).strip()
        return f"{steps}\n\nThe answer is $\\boxed{{{answer}}}$."
    return f"Working through the problem carefully, the answer is $\\boxed{{{answer}}}$."


class MathEnv(TurnBasedTextEnv):
    """
    ## Description
    Two agents solve a math problem with an exact answer. The `reasoning_generator` reasons
    in words and states its answer in `\\boxed{}`; the `tool_generator` writes a Python program
    whose printed result is its answer. Each sees the other's latest answer (and the program
    and its output) and may revise its own.

    ## Agents
    `reasoning_generator`, then `tool_generator`, once each per round.

    ## Observation
    Chat messages `[system, user]`: the role and answer format, then the problem and the
    latest answers of both agents.

    ## Action format
    - `reasoning_generator`: free text whose last `\\boxed{...}` holds the answer.
    - `tool_generator`: one ```python block; the last non-empty line it prints is the answer.
      The program runs in the sandbox (time and memory bounded); a crash or time-out is a
      valid action without an answer, and `info["details"]` says why.
    A reply without a boxed answer / a code block is an invalid action (reward 0).

    ## Success and rewards
    Success: the reasoning generator's final boxed answer equals the ground truth under
    math-verify (`0.5` equals `\\frac{1}{2}`). Each agent: reward 1 and agent success when its
    latest answer equals the ground truth.

    ## Episode end
    Terminated as soon as both agents' latest answers agree (under math-verify); truncated
    after `max_turns` rounds.

    ## Arguments
    `max_turns` (default 3), `dataset` ("generated": the built-in seeded generator, or a
    .jsonl/.parquet file with `question` and `answer`/`solution`), `split` ("train"/"test":
    generated problems from seeds that never overlap; unused for files), `shuffle` (files:
    walk in a seeded random order), `timeout_s` (per program run), `shuffle_seed`.
    `reset(options={"task_index": i})` plays problem i (files: row i mod N).

    ## Version history
    v0: first version.
    """

    possible_agents = ("reasoning_generator", "tool_generator")
    default_max_turns = 3
    task_source = "seeded generator or question/answer files"

    @property
    def has_test_split(self) -> bool:
        return self.tasks is None  # generated problems have disjoint test seeds; a file is one split

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        dataset: str = "generated",
        shuffle: bool = False,
        split: str = "train",
        timeout_s: float = 10.0,
        shuffle_seed: int = 0,
    ):
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        if split not in ("train", "test"):
            raise ConfigError(f"env.split must be 'train' or 'test', got {split!r}.")
        self.dataset, self.split, self.timeout_s = dataset, split, float(timeout_s)
        self.tasks: list[MathTask] | None = None if dataset == "generated" else load_math_tasks(dataset)
        self.order = (
            np.random.default_rng(shuffle_seed).permutation(len(self.tasks))
            if shuffle and self.tasks is not None
            else None
        )
        self.task: MathTask = generate_problem(0, split)

    def _reset_task(self, options: dict[str, Any]) -> None:
        self.task = self._pick_task(options.get("task_index"))
        self.task_id = self.task.task_id
        self.answers: dict[str, str | None] = {agent: None for agent in self.possible_agents}
        self.reasoning: str | None = None
        self.program: str | None = None
        self.program_output: dict[str, Any] | None = None

    def _pick_task(self, task_index: int | None) -> MathTask:
        size = GENERATED_INDEX_RANGE if self.tasks is None else len(self.tasks)
        index = int(self.np_random.integers(size)) if task_index is None else int(task_index)
        if self.tasks is None:
            return generate_problem(index, self.split)
        index %= len(self.tasks)
        return self.tasks[int(self.order[index]) if self.order is not None else index]

    # -- replies --------------------------------------------------------------------------

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        details: dict[str, Any] = {}
        if agent == "reasoning_generator":
            answer = extract_boxed(text)
            if answer is None:
                return TurnResult(valid=False, parse_error="no \\boxed{...} answer in the reply", agent_success=False)
            self.reasoning = text
        else:
            code = extract_code(text)
            if code is None:
                return TurnResult(valid=False, parse_error="no ```python code block in the reply", agent_success=False)
            self.program = code
            run = run_program(code, timeout_s=self.timeout_s)
            self.program_output = details["program"] = {**run, "stdout": _tail(run["stdout"])}
            answer = printed_answer(self.program_output["stdout"]) if self.program_output["ok"] else None
        self.answers[agent] = answer
        correct = answer is not None and answers_match(self.task.answer, answer)
        details["answer"] = answer
        return TurnResult(reward=float(correct), agent_success=correct, done=self._agreed(), details=details)

    def _agreed(self) -> bool:
        first, second = (self.answers.get(agent) for agent in self.possible_agents)
        return first is not None and second is not None and answers_match(first, second)

    def _episode_success(self) -> bool:
        final = self.answers.get("reasoning_generator")
        return final is not None and answers_match(self.task.answer, final)

    # -- prompts --------------------------------------------------------------------------

    def _prompt(self, agent: str) -> list[Message]:
        if agent == "reasoning_generator":
            system = (
                "You are the reasoning agent of a team solving a math problem. Think step by step, then give "
                "the final answer as \\boxed{answer}, exact and simplified."
            )
        else:
            system = (
                "You are the tool agent of a team solving a math problem. Write one ```python code block whose "
                "program computes the answer exactly and prints it on its last line."
            )
        parts = [f"## Problem\n{self.task.question}"]
        if agent == "tool_generator" and self.reasoning is not None:
            parts.append(f"## The reasoning agent's latest solution\n{_tail(self.reasoning)}")
        if agent == "reasoning_generator" and self.program is not None:
            parts.append(
                f"## The tool agent's latest program\n```python\n{self.program}\n```\n\n{self._render_output()}"
            )
        if agent == "tool_generator" and self.program is not None:
            parts.append(f"## Your latest program\n```python\n{self.program}\n```\n\n{self._render_output()}")
        if agent == "reasoning_generator" and self.answers["reasoning_generator"] is not None:
            parts.append(f"## Your latest answer\n\\boxed{{{self.answers['reasoning_generator']}}}")
        parts.append(
            "Check the other agent's work against yours and reply with your own answer."
            if len(parts) > 1
            else "Solve the problem."
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def _render_output(self) -> str:
        output = self.program_output or {}
        if output.get("ok"):
            return f"It printed:\n{output['stdout'] or '(nothing)'}"
        if output.get("timed_out"):
            return "It ran out of time."
        if output.get("stopped_for") == "output_limit":
            return "It printed far too much and was stopped."
        return f"It exited with status {output.get('returncode')}:\n{output.get('stderr_tail', '')}"

    # -- the expert -----------------------------------------------------------------------

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        answer = wrong_answer(self.task.answer) if wrong else self.task.answer
        if agent == "reasoning_generator":
            return _worked_solution(self.task.solution if not wrong else None, answer)
        if self.task.program and not wrong:
            program = self.task.program
        else:
            program = f"answer = {answer!r}\nprint(answer)"
        return f"```python\n{program}\n```"


class MathSingleAgentEnv(MathEnv):
    """
    ## Description
    `MathEnv` with the reasoning agent alone.

    ## Agents
    `reasoning_generator`.

    ## Success and rewards
    As in `MathEnv`: the boxed answer equals the ground truth under math-verify; reward 1 then.

    ## Episode end
    Terminated at the first reply with a boxed answer; an invalid reply (no `\\boxed{}`) gets
    another try, up to `max_turns` replies.

    ## Arguments / Version history
    As `MathEnv`. v0: first version.
    """

    possible_agents = ("reasoning_generator",)

    def _agreed(self) -> bool:
        return self.answers.get("reasoning_generator") is not None
