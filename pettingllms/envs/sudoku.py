"""Sudoku for a tool agent and a planner agent (rules in `sudoku_board.py`)."""

from __future__ import annotations

from pettingllms.envs import sudoku_board as board
from pettingllms.envs.planning import PlanCheck, PlanningEnv, embed_puzzle, embed_solver, parse_number_grid


class SudokuEnv(PlanningEnv):
    """
    Fill in a small Sudoku, as a team of two LLM agents.

    ## Description
    A `size` x `size` grid (4 by default, with 2x2 boxes; any perfect square works) has
    `num_empty` empty cells. Every row, column and box must hold 1..size exactly once. The
    puzzle is made from a shuffled full grid by emptying cells in random order while the
    solution stays unique; if that cannot reach `num_empty`, the last cells are emptied
    anyway and any valid completion counts. The grid is drawn one row per line, cells
    separated by spaces, `.` (or `0`, see `empty_cell`) for an empty cell.

    ## Agents
    `("tool", "planner")`, in that order each round.
    - `tool` writes a Python program in a ```python block that solves the grid and prints it
      as the `Actions:` line. The environment runs it in the sandbox (5 s limit).
    - `planner` sees the grid, what the program printed (or how it failed) and the feedback
      of earlier rounds, and gives the final grid.

    ## Observation
    Chat messages for the acting agent: a system message (its role and the answer format)
    and a user message (the rules, the grid, earlier rounds, and for the planner the tool
    program's output, cut to 400 characters).

    ## Action format
    Assistant text. The planner ends its reply with the whole filled grid, row by row:
    `Actions: [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]`. Brackets and
    separators are free, and without brackets the grid may follow on the lines below the
    marker; there must be exactly size*size numbers, else the action is invalid (as is a
    reply without an `Actions:` line). A tool reply without a ```python block is an invalid
    action; a program that crashes or times out is a valid action whose output solves
    nothing.

    ## Success and rewards
    The grid solves the puzzle when it keeps every given number and no row, column or box
    repeats a value (all values in 1..size).
    - planner: reward 1.0 and `agent_success` when its grid solves the puzzle, else 0.
    - tool: reward 1.0 and `agent_success` when its program's printed `Actions:` line solves
      the puzzle, else 0.
    - episode: success when the planner solved the puzzle.

    ## Episode end
    Terminated when a planner's grid solves the puzzle. Otherwise the feedback (changed
    givens, repeated values) opens the next round; after `max_turns` rounds the episode is
    truncated and fails.

    ## Arguments
    ```python
    pettingllms.make("sudoku", max_turns=3, size=4, num_empty=6)
    ```
    - `max_turns`: rounds (one tool and one planner turn each), default 3.
    - `size`: side of the grid, a perfect square (4, 9); default 4.
    - `num_empty`: empty cells, from 1 to size*size; default 6.
    - `expert_program`: the program the expert's tool writes. "compact" (default): it opens
      with the puzzle exactly as the prompt shows it, in a triple-quoted string, and a short
      solver parses it there (a model learns to copy text sooner than to re-encode it).
      "v0": v0's program, a solver function's source and the puzzle as a Python literal.
    - `recovery_rate`: share of episodes, chosen by a hash of the task id, that the expert
      plays wrong in round 1 and right afterwards, so the data holds later rounds and their
      "Earlier rounds" history; default 0. Needs `max_turns` >= 2.
    - `empty_cell`: how the prompts draw an empty cell, "." (default, as in v0) or "0". With "0" every
      cell is one token of a Qwen2-style tokenizer, whose pre-tokenizer merges " ." (and
      " .\n") into one token; then the puzzle's length in tokens is the same for every
      puzzle, and a small model learns to copy it into the program far sooner (the tiny
      built-in model: exact copies after ~200 steps with "0", none after 1,000 with ".").
    - `render_mode`: None or "ansi"; `render()` returns the grid as text (the last answer,
      once there is one).

    ## Version history
    * v0: initial version.
    * v1: the expert's tool writes the "compact" program (the puzzle copied verbatim, about
      half the tokens of v0's; `expert_program="v0"` gives v0's); arguments `expert_program`
      and `recovery_rate`.
    """

    game_name = "sudoku"
    solver_summary = "Backtracking search, filling the empty cells in order, solves the grid:"
    v0_solver_summary = "Backtracking search, filling the empty cell with the fewest candidates first, solves the grid:"

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        size: int = 4,
        num_empty: int = 6,
        expert_program: str = "compact",
        recovery_rate: float = 0.0,
        empty_cell: str = ".",
    ):
        super().__init__(max_turns, render_mode, expert_program, recovery_rate)
        if str(empty_cell) not in (".", "0"):  # `env.kwargs.empty_cell=0` arrives as the integer 0
            raise ValueError(f"empty_cell must be '.' or '0', got {empty_cell!r}")
        self.empty_cell = str(empty_cell)
        if expert_program == "v0":
            self.solver_summary = self.v0_solver_summary
        if not isinstance(size, int):
            raise ValueError(f"size must be an integer perfect square (4, 9), got {size!r}")
        side = board.box_side(size)
        if not isinstance(num_empty, int) or not 1 <= num_empty <= size * size:
            raise ValueError(f"num_empty must be an integer from 1 to {size * size}, got {num_empty!r}")
        self.size = size
        self.num_empty = num_empty
        self.title = f"{size}x{size} Sudoku"
        first_rows = ", ".join(str([(side * r + c) % size + 1 for c in range(size)]) for r in range(2))
        self.answer_format = f"Actions: [{first_rows}, ...] (the whole filled grid: all {size} rows of {size} numbers)"
        self.rules = (
            f"Sudoku. The {size}x{size} grid is drawn one row per line, cells separated by spaces, "
            f"'{self.empty_cell}' for an empty cell. Positions are (row, col), counted from 0 at the top-left corner. "
            f"Fill every empty cell with a number from 1 to {size} so that each row, each column "
            f"and each {side}x{side} box holds every number exactly once. "
            "The given numbers stay as they are."
        )

    def _variant(self) -> str:
        return "" if (self.size, self.num_empty) == (4, 6) else f"size{self.size}-empty{self.num_empty}"

    def _new_puzzle(self) -> None:
        self.puzzle, self.solution = board.generate_puzzle(self.np_random, size=self.size, num_empty=self.num_empty)

    def _puzzle_text(self) -> str:
        return board.render_grid(self.puzzle, self.empty_cell)

    def _parse_plan(self, text: str) -> list[list[int]]:
        return parse_number_grid(text, self.size)

    def _format_plan(self, plan: list[list[int]]) -> str:
        return f"Actions: {plan}"

    def _check_plan(self, plan: list[list[int]]) -> PlanCheck:
        problems = board.check_answer(self.puzzle, plan)
        drawn = board.render_grid(plan)
        if not problems:
            return PlanCheck(True, "solved: every row, column and box holds each number once.", drawn)
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more problems" if len(problems) > 5 else "")
        return PlanCheck(False, f"the grid is not a solution: {listed}.", drawn)

    def _wrong_cell(self) -> tuple[int, int, int]:
        """The first empty cell and a wrong value for it (the next number after the right one)."""
        row, col = next((r, c) for r in range(self.size) for c in range(self.size) if self.puzzle[r][c] == 0)
        return row, col, self.solution[row][col] % self.size + 1

    def _wrong_plan(self) -> list[list[int]]:
        row, col, value = self._wrong_cell()
        answer = [list(cells) for cells in self.solution]
        answer[row][col] = value
        return answer

    def _solver_program(self, wrong: bool) -> str:
        row, col, value = self._wrong_cell()
        if self.expert_program == "v0":
            edits = [f"answer[{row}][{col}] = {value}"] if wrong else []
            return embed_solver(board.solve_sudoku, repr(self.puzzle), edits)
        return embed_puzzle(
            self._puzzle_text(), board.SOLVER_PROGRAM, [f"grid[{row}][{col}] = {value}"] if wrong else []
        )
