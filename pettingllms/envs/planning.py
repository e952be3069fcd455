"""What the planning environments (Sokoban, path planning, Sudoku) share.

Two agents take turns, `tool` then `planner`, for up to `max_turns` rounds:

- `tool` reads the puzzle and writes a short Python program in a ```python block that
  computes a plan and prints it. The environment runs the program in the sandbox and keeps
  what it printed (or how it failed) for the planner.
- `planner` reads the puzzle, the program's output and the feedback of earlier rounds, and
  ends its reply with the final answer on an `Actions:` line. The environment plays that
  answer on the puzzle: solved ends the episode with success; otherwise the feedback says
  what happened and the next round starts.

A game subclasses `PlanningEnv` and writes the puzzle-specific hooks (`_new_puzzle`,
`_puzzle_text`, `_parse_plan`, `_check_plan`, `_format_plan`, `_solver_program`,
`_wrong_plan`); the parsing helpers here are shared by all of them.

The expert's tool program is training data, so it is written to be learnable: the
"compact" program (`embed_puzzle`) opens with the puzzle copied verbatim from the prompt
into a triple-quoted string, and a short solver parses it there: a small model learns to
copy text far sooner than to re-encode it as a Python literal (the "v0" program,
`embed_solver`). `recovery_rate` makes the expert play some episodes wrong in round 1 and
right afterwards, so the data also shows later rounds, with their history.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pettingllms import sandbox
from pettingllms.envs.base import Message, TurnBasedTextEnv, TurnResult
from pettingllms.exceptions import InfrastructureError

ANSWER_MARKER = "Actions:"
MOVE_NAMES = {
    "up": "Up", "down": "Down", "left": "Left", "right": "Right",
    "u": "Up", "d": "Down", "l": "Left", "r": "Right",
}  # fmt: skip
_ANSWER_MARKER = re.compile(re.escape(ANSWER_MARKER), re.IGNORECASE)
_MOVE_SEPARATORS = re.compile(r"[\s,;.'\"`\[\]()*>→-]+")
_PYTHON_OPENING = re.compile(r"```(?:python3?|py)[^\S\n]*\n", re.IGNORECASE)


class ReplyParseError(ValueError):
    """A reply that cannot be read as the action it should hold; the message says why."""


@dataclass(frozen=True)
class PlanCheck:
    """What playing a plan on the puzzle did."""

    solved: bool
    feedback: str
    """One or two sentences for the agents: the result, or the illegal move / wrong cell."""
    board_text: str
    """The puzzle as the plan left it (what `render()` shows)."""


# -- reading replies -------------------------------------------------------------------


def extract_python_block(text: str) -> str:
    """The code of the last complete ```python (or ```py) block in `text`.

    Walks the ``` fences once, left to right, so a long degenerate reply costs linear time.
    """
    blocks, code_start = [], None
    for fence in re.finditer("```", text):
        if code_start is not None:
            blocks.append(text[code_start : fence.start()])
            code_start = None
            continue
        opening = _PYTHON_OPENING.match(text, fence.start())
        if opening:
            code_start = opening.end()
    if blocks:
        if not blocks[-1].strip():
            raise ReplyParseError("the ```python block is empty")
        return blocks[-1]
    if code_start is not None:
        raise ReplyParseError("the ```python block is never closed with ``` (was the reply cut off?)")
    raise ReplyParseError("no ```python block found")


def answer_text(text: str, multiline: bool = False) -> str:
    """What follows the last `Actions:` marker (any case) in `text`.

    A bracketed list is taken whole, even across lines. Otherwise the rest of the marker's
    line; with `multiline`, also the lines below it up to the first blank line (or, when the
    marker ends its line, the first block of lines below it).
    """
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        raise ReplyParseError(f"no '{ANSWER_MARKER}' line found; end the reply with it")
    rest = text[markers[-1].end() :].lstrip(" \t*`")
    if rest.startswith("["):
        depth = 0
        for position, char in enumerate(rest):
            depth += {"[": 1, "]": -1}.get(char, 0)
            if depth == 0:
                return rest[: position + 1]
        raise ReplyParseError(f"the list after '{ANSWER_MARKER}' is never closed with ']'")
    first_line, _, below = rest.partition("\n")
    if first_line.strip() and not multiline:
        return first_line
    block = [first_line] if first_line.strip() else []
    for line in below.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            break
    return "\n".join(block)


def parse_moves(text: str) -> list[str]:
    """The moves of an `Actions: ["Up", "Left", ...]` answer.

    Case, quotes, brackets and separators (commas, spaces, arrows) are free, and U/D/L/R are
    accepted; any other word is an error, never a guess.
    """
    tokens = [token for token in _MOVE_SEPARATORS.split(answer_text(text)) if token]
    if not tokens:
        raise ReplyParseError(f"the list after '{ANSWER_MARKER}' is empty")
    moves = []
    for token in tokens:
        if token.lower() not in MOVE_NAMES:
            raise ReplyParseError(f"{shorten(token, 30)!r} is not a move; use Up, Down, Left or Right")
        moves.append(MOVE_NAMES[token.lower()])
    return moves


def format_moves(plan: list[str]) -> str:
    """The `Actions:` line for a list of moves, as `parse_moves` reads it."""
    return "Actions: [" + ", ".join(f'"{move}"' for move in plan) + "]"


def parse_number_grid(text: str, size: int) -> list[list[int]]:
    """The `size` x `size` grid of an `Actions: [[1, 2, ...], ...]` answer (row by row).

    Any separators or brackets; the numbers are read in order and must be exactly size*size.
    """
    digits = re.findall(r"\d+", answer_text(text, multiline=True))
    if len(digits) != size * size:
        raise ReplyParseError(
            f"expected the filled {size}x{size} grid ({size * size} numbers) after '{ANSWER_MARKER}', "
            f"found {len(digits)} numbers"
        )
    if any(len(number) > 6 for number in digits):  # int() refuses very long digit strings
        raise ReplyParseError(f"the grid after '{ANSWER_MARKER}' holds a number too long to be a cell value")
    numbers = [int(number) for number in digits]
    return [numbers[row * size : (row + 1) * size] for row in range(size)]


def shorten(text: str, limit: int) -> str:
    """`text`, cut to its first `limit` characters with a note of how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def last_lines(text: str, limit: int) -> str:
    """The end of `text` (where a traceback says what went wrong), at most `limit` characters."""
    text = text.rstrip()
    return text if len(text) <= limit else "..." + text[-limit:]


def embed_solver(solver: Callable, puzzle_literal: str, edits: Sequence[str] = ()) -> str:
    """The "v0" program: `solver`'s own source, then `PUZZLE = <puzzle_literal>`,
    `answer = solver(PUZZLE)`, any `edits` lines, and a print of the `Actions:` line (JSON of `answer`)."""
    source = inspect.getsource(solver).rstrip()
    lines = ["import json", "", "", source, "", "", f"PUZZLE = {puzzle_literal}", f"answer = {solver.__name__}(PUZZLE)"]
    return "\n".join([*lines, *edits, 'print("Actions: " + json.dumps(answer))']) + "\n"


def embed_puzzle(puzzle_text: str, program: str, edits: Sequence[str] = ()) -> str:
    """The "compact" program: the triple-quoted string `puzzle`, holding `puzzle_text` exactly as
    the prompt shows it, then `program` (which parses `puzzle`), with any `edits` lines before
    its last line (the one that prints the `Actions:` line)."""
    # The drawn puzzles use no quotes or backslashes, so the text needs no escaping to stay verbatim.
    assert '"""' not in puzzle_text and "\\" not in puzzle_text, puzzle_text
    *body, last = program.rstrip("\n").split("\n")
    return "\n".join(['puzzle = """', puzzle_text, '"""', *body, *edits, last]) + "\n"


def is_recovery_episode(task_id: str, recovery_rate: float) -> bool:
    """Whether task `task_id` is one of the `recovery_rate` share of recovery episodes.

    A hash of the task id decides, so it depends neither on scheduling nor on the expert
    policy's own choice of wrong episodes (a hash of the episode id).
    """
    digest = hashlib.sha256(f"recovery:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < recovery_rate


# -- the two-agent flow ----------------------------------------------------------------

TOOL_SYSTEM = (
    "You are the tool agent of a two-agent team solving a {title}. "
    "Write a short Python program that computes the solution and prints it.\n"
    "Put the whole program in one ```python code block. It runs with the standard library only, no input, "
    "and a {timeout:g} second time limit; copy the puzzle into it.\n"
    "The program must print the answer as one line: {answer_format}\n"
    "The planner agent reads what your program prints and gives the team's final answer."
)
PLANNER_SYSTEM = (
    "You are the planner agent of a two-agent team solving a {title}. "
    "The tool agent wrote a program to compute the solution; you see what it printed.\n"
    "Check it against the rules and the puzzle, fix it if needed, "
    "and end your reply with the final answer on one line: {answer_format}"
)


EXPERT_PROGRAMS = ("compact", "v0")
"""The expert tool's programs: "compact" (`embed_puzzle`, the default) and "v0" (`embed_solver`)."""


class PlanningEnv(TurnBasedTextEnv):
    """Base of the two-agent planning environments; each game writes the hooks below."""

    possible_agents = ("tool", "planner")
    default_max_turns = 3
    game_name = ""
    """Short name, the start of every task id."""
    title = ""
    """What the puzzle is called in prompts, e.g. "Sokoban puzzle"."""
    rules = ""
    """How the puzzle is drawn and played; opens every user message."""
    answer_format = ""
    """The `Actions:` line, with an example."""
    solver_summary = ""
    """The expert tool's one-line description of its program."""
    tool_timeout_s = 5.0
    output_chars = 400
    """How much of the program's output the planner sees."""
    _board_text = ""

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        expert_program: str = "compact",
        recovery_rate: float = 0.0,
    ):
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        if expert_program not in EXPERT_PROGRAMS:
            raise ValueError(f"expert_program must be one of {', '.join(EXPERT_PROGRAMS)}, got {expert_program!r}")
        is_number = isinstance(recovery_rate, (int, float)) and not isinstance(recovery_rate, bool)
        if not (is_number and 0 <= recovery_rate <= 1):
            raise ValueError(f"recovery_rate must be a number from 0 to 1, got {recovery_rate!r}")
        if recovery_rate > 0 and self.max_turns < 2:
            raise ValueError(
                f"recovery_rate={recovery_rate:g} needs max_turns >= 2 (a recovery episode is right in round 2), "
                f"got max_turns={self.max_turns}"
            )
        self.expert_program = expert_program
        self.recovery_rate = float(recovery_rate)
        self.recovery_episode = False
        """Whether the expert plays this episode's round 1 wrong and the later rounds right."""

    def render(self) -> str:
        return self._board_text

    # -- hooks for each game -----------------------------------------------------------

    def _new_puzzle(self) -> None:
        """Draw the puzzle from `self.np_random`; keep a known solution in `self.solution`."""
        raise NotImplementedError

    def _puzzle_text(self) -> str:
        raise NotImplementedError

    def _variant(self) -> str:
        """The non-default game arguments, for the task id ("" when all are defaults)."""
        return ""

    def _parse_plan(self, text: str) -> Any:
        """The plan in a reply or program output; raises `ReplyParseError`."""
        raise NotImplementedError

    def _check_plan(self, plan: Any) -> PlanCheck:
        raise NotImplementedError

    def _format_plan(self, plan: Any) -> str:
        """The `Actions:` line for `plan`."""
        raise NotImplementedError

    def _wrong_plan(self) -> Any:
        """A plausible plan that does not solve the puzzle."""
        raise NotImplementedError

    def _solver_program(self, wrong: bool) -> str:
        """A self-contained program printing the solution (or the wrong plan)."""
        raise NotImplementedError

    # -- the base class's methods ------------------------------------------------------

    def _reset_task(self, options: dict[str, Any]) -> None:
        self._new_puzzle()
        self._board_text = self._puzzle_text()
        if self.seed is None:
            suffix = "h" + hashlib.sha1(self._board_text.encode()).hexdigest()[:10]
        else:
            suffix = str(self.seed)
        self.task_id = "-".join(part for part in (self.game_name, self._variant(), suffix) if part)
        self.recovery_episode = is_recovery_episode(self.task_id, self.recovery_rate)
        self.solved = False
        self._history: list[str] = []
        self._tool_report = "The tool agent has not written a program yet."
        self._tool_summary = "wrote no program"

    def _prompt(self, agent: str) -> list[Message]:
        template = TOOL_SYSTEM if agent == "tool" else PLANNER_SYSTEM
        system = template.format(title=self.title, timeout=self.tool_timeout_s, answer_format=self.answer_format)
        parts = [self.rules, f"The puzzle:\n{self._puzzle_text()}"]
        if self._history:
            parts.append("Earlier rounds:\n" + "\n".join(self._history))
        if agent == "tool":
            parts.append("Write the program now.")
        else:
            parts.append(f"The tool agent's program this round:\n{self._tool_report}")
            parts.append(f"Give the final answer now, ending with the '{ANSWER_MARKER}' line.")
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        return self._run_tool(text) if agent == "tool" else self._judge_plan(text)

    def _episode_success(self) -> bool:
        return self.solved

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        # A recovery episode's first round is wrong whatever the policy says; `wrong` (the
        # expert policy's error_rate, decided per episode) still makes every round wrong.
        wrong = wrong or (self.recovery_episode and self.round_idx == 0)
        if agent == "tool":
            return f"{self.solver_summary}\n\n```python\n{self._solver_program(wrong)}```"
        plan = self._wrong_plan() if wrong else self.solution
        return f"Final answer:\n{self._format_plan(plan)}"

    # -- the two turns -----------------------------------------------------------------

    def _run_tool(self, text: str) -> TurnResult:
        """Run the tool agent's program; its reward says whether its printed plan solves the puzzle."""
        try:
            code = extract_python_block(text)
        except ReplyParseError as error:
            self._tool_report = "The tool agent wrote no program this round."
            self._tool_summary = "wrote no program"
            return TurnResult(valid=False, parse_error=str(error), agent_success=False)
        try:
            run = sandbox.run_python(code, timeout_s=self.tool_timeout_s)
        except sandbox.SandboxError as error:  # not the program's fault: the episode is an error, replayed on resume
            raise InfrastructureError("sandbox_error", f"the sandbox could not start: {error}") from None
        details: dict[str, Any] = {
            "returncode": run.returncode,
            "timed_out": run.timed_out,
            "stopped_for": getattr(run, "stopped_for", None),
            "stdout": shorten(run.stdout, 4000),
            "stderr": last_lines(run.stderr, 4000),
        }
        self._describe_run(run)
        solves = False
        if run.returncode == 0 and not run.timed_out:  # a crashed program solves nothing, whatever it printed
            try:
                check = self._check_plan(self._parse_plan(run.stdout))
                solves = check.solved
                details["output_feedback"] = check.feedback
            except ReplyParseError as error:
                details["output_parse_error"] = str(error)
        details["output_solves"] = solves
        return TurnResult(reward=1.0 if solves else 0.0, agent_success=solves, details=details)

    def _describe_run(self, run: Any) -> None:
        """What the planner (in full) and later rounds (in one line) learn about the program's run."""
        stdout = run.stdout.strip()
        printed = f"It printed:\n```\n{shorten(stdout, self.output_chars)}\n```" if stdout else "It printed nothing."
        if run.timed_out:
            self._tool_report = f"It timed out after {self.tool_timeout_s:g} s. {printed}"
            self._tool_summary = f"timed out after {self.tool_timeout_s:g} s"
        elif run.returncode != 0:
            if run.returncode is None:  # the sandbox stopped it, e.g. for flooding its output
                how = f"was stopped by the sandbox ({getattr(run, 'stopped_for', None) or 'limit reached'})"
            else:
                how = f"failed with exit code {run.returncode}"
            error = last_lines(run.stderr, self.output_chars) or "(nothing)"
            self._tool_report = f"It {how}. The end of its error output:\n```\n{error}\n```\n{printed}"
            last_line = run.stderr.strip().splitlines()[-1:] or [how]
            self._tool_summary = f"failed ({shorten(last_line[0], 120)})"
        else:
            self._tool_report = printed
            self._tool_summary = f"printed {shorten(stdout, 120)!r}"

    def _judge_plan(self, text: str) -> TurnResult:
        """Play the planner's answer on the puzzle; solving it ends the episode."""
        round_number = self.round_idx + 1
        try:
            plan = self._parse_plan(text)
        except ReplyParseError as error:
            self._history.append(
                f"Round {round_number}: the tool program {self._tool_summary}; "
                f"the planner's answer could not be read: {error}."
            )
            return TurnResult(valid=False, parse_error=str(error), agent_success=False)
        check = self._check_plan(plan)
        self._board_text = check.board_text
        self.solved = check.solved
        self._history.append(
            f"Round {round_number}: the tool program {self._tool_summary}; the planner answered "
            f"{shorten(self._format_plan(plan), 300)} -> {check.feedback}"
        )
        details = {"plan": plan, "solved": check.solved, "feedback": check.feedback}
        reward = 1.0 if check.solved else 0.0
        return TurnResult(reward=reward, done=check.solved, agent_success=check.solved, details=details)
