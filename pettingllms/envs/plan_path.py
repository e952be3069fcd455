"""Path planning on a grid with obstacles, for a tool agent and a planner agent (rules in `plan_path_grid.py`)."""

from __future__ import annotations

from pettingllms.envs import plan_path_grid as grid_rules
from pettingllms.envs.planning import PlanCheck, PlanningEnv, embed_puzzle, embed_solver, format_moves, parse_moves


class PlanPathEnv(PlanningEnv):
    """
    Walk from the start to the goal of a grid with obstacles, as a team of two LLM agents.

    ## Description
    A `size` x `size` grid has about `obstacle_ratio` of its cells blocked, a start and a
    goal. The goal is always reachable from the start, at least `size // 2` moves away; a
    BFS gives a shortest path. The grid is drawn one character per cell, rows top to bottom:

        .  free      #  obstacle      S  start      G  goal

    (`render()` after a plan also marks the cells it walked through with `*`.)

    ## Agents
    `("tool", "planner")`, in that order each round.
    - `tool` writes a Python program in a ```python block that computes a path and prints
      it as the `Actions:` line. The environment runs it in the sandbox (5 s limit).
    - `planner` sees the grid, what the program printed (or how it failed) and the feedback
      of earlier rounds, and gives the final path.

    ## Observation
    Chat messages for the acting agent: a system message (its role and the answer format)
    and a user message (the rules, the grid, earlier rounds, and for the planner the tool
    program's output, cut to 400 characters).

    ## Action format
    Assistant text. The planner ends its reply with one line such as
    `Actions: ["Up", "Right", "Right"]`. Case, quotes, brackets and separators are free and
    U/D/L/R are accepted; anything else in the list is an invalid action, as is a reply
    without an `Actions:` line or with an empty list. A tool reply without a ```python block
    is an invalid action; a program that crashes or times out is a valid action whose
    output solves nothing.

    ## Success and rewards
    The path is walked from the start; it succeeds when it reaches the goal (moves after that
    are ignored; it need not be a shortest path), and fails at the first illegal move
    (leaving the grid or entering an obstacle).
    - planner: reward 1.0 and `agent_success` when its path reaches the goal, else 0.
    - tool: reward 1.0 and `agent_success` when its program's printed `Actions:` line
      reaches the goal, else 0.
    - episode: success when the planner's path reached the goal.

    ## Episode end
    Terminated when a planner's path reaches the goal. Otherwise the feedback (which move was
    illegal, or where the path ended) opens the next round; after `max_turns` rounds the
    episode is truncated and fails.

    ## Arguments
    ```python
    pettingllms.make("plan_path", max_turns=3, size=10, obstacle_ratio=0.25)
    ```
    - `max_turns`: rounds (one tool and one planner turn each), default 3.
    - `size`: side of the grid, at least 3; default 10.
    - `obstacle_ratio`: share of cells that are obstacles, 0 to 0.5; default 0.25.
    - `expert_program`: the program the expert's tool writes. "compact" (default): it opens
      with the puzzle exactly as the prompt shows it, in a triple-quoted string, and a short
      solver parses it there (a model learns to copy text sooner than to re-encode it).
      "v0": v0's program, a solver function's source and the puzzle as a Python literal.
    - `recovery_rate`: share of episodes, chosen by a hash of the task id, that the expert
      plays wrong in round 1 and right afterwards, so the data holds later rounds and their
      "Earlier rounds" history; default 0. Needs `max_turns` >= 2.
    - `render_mode`: None or "ansi"; `render()` returns the grid as text, with the last
      path marked.

    ## Version history
    * v0: initial version.
    * v1: the expert's tool writes the "compact" program (the puzzle copied verbatim, about
      half the tokens of v0's; `expert_program="v0"` gives v0's); arguments `expert_program`
      and `recovery_rate`.
    """

    game_name = "plan_path"
    title = "grid path-planning puzzle"
    answer_format = 'Actions: ["Up", "Right", ...] (the moves from S to G in order; each is Up, Down, Left or Right)'
    solver_summary = "Breadth-first search from S over the free cells finds a shortest path to G:"

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        size: int = 10,
        obstacle_ratio: float = 0.25,
        expert_program: str = "compact",
        recovery_rate: float = 0.0,
    ):
        super().__init__(max_turns, render_mode, expert_program, recovery_rate)
        if not isinstance(size, int) or size < 3:
            raise ValueError(f"size must be an integer of at least 3, got {size!r}")
        if not isinstance(obstacle_ratio, (int, float)) or not 0 <= obstacle_ratio <= 0.5:
            raise ValueError(f"obstacle_ratio must be a number from 0 to 0.5, got {obstacle_ratio!r}")
        self.size = size
        self.obstacle_ratio = float(obstacle_ratio)
        self.rules = (
            f"Path planning. The grid is drawn one character per cell, rows top to bottom: {grid_rules.LEGEND}. "
            "Positions are (row, col), counted from 0 at the top-left corner. Starting on S, each move (Up, Down, Left "
            "or Right) goes to the next cell; leaving the grid or entering an obstacle is illegal. "
            "The puzzle is solved when the path reaches G."
        )

    def _variant(self) -> str:
        if (self.size, self.obstacle_ratio) == (10, 0.25):
            return ""
        return f"size{self.size}-obstacles{self.obstacle_ratio:g}"

    def _new_puzzle(self) -> None:
        self.grid, self.solution = grid_rules.generate_grid(
            self.np_random, size=self.size, obstacle_ratio=self.obstacle_ratio
        )

    def _puzzle_text(self) -> str:
        return grid_rules.render_grid(self.grid)

    def _parse_plan(self, text: str) -> list[str]:
        return parse_moves(text)

    def _format_plan(self, plan: list[str]) -> str:
        return format_moves(plan)

    def _check_plan(self, plan: list[str]) -> PlanCheck:
        outcome = grid_rules.apply_path(self.grid, plan)
        drawn = grid_rules.render_grid(self.grid, outcome.cells)
        if outcome.reached_goal:
            moves = f"{outcome.moves_applied} moves (shortest: {len(self.solution)})"
            return PlanCheck(True, f"solved: the path reaches the goal in {moves}.", drawn)
        if outcome.illegal_move is not None:
            move = f"move {outcome.moves_applied + 1} ({plan[outcome.moves_applied]})"
            return PlanCheck(False, f"{move} is illegal: {outcome.illegal_move}. The path so far (*):\n{drawn}", drawn)
        end = f"the path ends at {outcome.cells[-1]}, not at the goal {self.grid.goal}"
        return PlanCheck(False, f"all {len(plan)} moves are legal, but {end}. The path (*):\n{drawn}", drawn)

    def _wrong_plan(self) -> list[str]:
        # One move short of the goal (the goal is at least two moves away, so the plan is not empty).
        return self.solution[:-1]

    def _solver_program(self, wrong: bool) -> str:
        if self.expert_program == "v0":
            rows = grid_rules.render_grid(self.grid).splitlines()
            return embed_solver(grid_rules.find_shortest_path, repr(rows), ["answer = answer[:-1]"] if wrong else [])
        return embed_puzzle(self._puzzle_text(), grid_rules.SOLVER_PROGRAM, ["plan = plan[:-1]"] if wrong else [])
