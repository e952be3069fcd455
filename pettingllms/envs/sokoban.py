"""Sokoban for a tool agent and a planner agent (rules in `sokoban_board.py`)."""

from __future__ import annotations

from pettingllms.envs import sokoban_board as board
from pettingllms.envs.planning import PlanCheck, PlanningEnv, embed_puzzle, embed_solver, format_moves, parse_moves


class SokobanEnv(PlanningEnv):
    """
    Push every box onto a goal in a small walled room, as a team of two LLM agents.

    ## Description
    A `dim` x `dim` room (walls around the border and a few inside) holds `num_boxes` boxes,
    as many goals, and the player. The player moves Up, Down, Left or Right and pushes a box
    by walking into it when the cell beyond is free; boxes cannot be pulled. Rooms are made
    solvable by construction: the boxes start on their goals and the player pulls them off by
    playing backwards; a BFS solver then gives a shortest plan (at least 4 moves).

    The room is drawn one character per cell, rows top to bottom:

        #  wall      _  floor      O  goal
        X  box       √  box on a goal
        P  player    S  player on a goal

    ## Agents
    `("tool", "planner")`, in that order each round.
    - `tool` writes a Python program in a ```python block that computes a plan and prints it
      as the `Actions:` line. The environment runs it in the sandbox (5 s limit).
    - `planner` sees the room, what the program printed (or how it failed) and the feedback
      of earlier rounds, and gives the final plan.

    ## Observation
    Chat messages for the acting agent: a system message (its role and the answer format)
    and a user message (the rules, the room, earlier rounds, and for the planner the tool
    program's output, cut to 400 characters).

    ## Action format
    Assistant text. The planner ends its reply with one line such as
    `Actions: ["Up", "Left", "Down"]`. Case, quotes, brackets and separators are free and
    U/D/L/R are accepted; anything else in the list is an invalid action, as is a reply
    without an `Actions:` line or with an empty list. A tool reply without a ```python block
    is an invalid action; a program that crashes or times out is a valid action whose
    output solves nothing.

    ## Success and rewards
    The plan is played from the starting room; it solves the room when every box is on a
    goal (moves after that are ignored), and fails at the first illegal move (walking into a
    wall, pushing a box into a wall or another box).
    - planner: reward 1.0 and `agent_success` when its plan solves the room, else 0.
    - tool: reward 1.0 and `agent_success` when its program's printed `Actions:` line solves
      the room, else 0.
    - episode: success when the planner solved the room.

    ## Episode end
    Terminated when a planner's plan solves the room. Otherwise the feedback (which move was
    illegal, or how many boxes are off their goals, with the room the plan left) opens the
    next round; after `max_turns` rounds the episode is truncated and fails.

    ## Arguments
    ```python
    pettingllms.make("sokoban", max_turns=3, dim=6, num_boxes=1)
    ```
    - `max_turns`: rounds (one tool and one planner turn each), default 3.
    - `dim`: side of the room including its walls, at least 5; default 6.
    - `num_boxes`: boxes (and goals), default 1.
    - `expert_program`: the program the expert's tool writes. "compact" (default): it opens
      with the puzzle exactly as the prompt shows it, in a triple-quoted string, and a short
      solver parses it there (a model learns to copy text sooner than to re-encode it).
      "v0": v0's program, a solver function's source and the puzzle as a Python literal.
    - `recovery_rate`: share of episodes, chosen by a hash of the task id, that the expert
      plays wrong in round 1 and right afterwards, so the data holds later rounds and their
      "Earlier rounds" history; default 0. Needs `max_turns` >= 2.
    - `render_mode`: None or "ansi"; `render()` returns the room as text, as the last plan
      left it.

    ## Version history
    * v0: initial version.
    * v1: the expert's tool writes the "compact" program (the puzzle copied verbatim, about
      half the tokens of v0's; `expert_program="v0"` gives v0's); arguments `expert_program`
      and `recovery_rate`.
    """

    game_name = "sokoban"
    title = "Sokoban puzzle"
    answer_format = 'Actions: ["Up", "Left", ...] (the moves in order; each is Up, Down, Left or Right)'
    solver_summary = "Breadth-first search over the player and box positions finds a shortest plan:"

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        dim: int = 6,
        num_boxes: int = 1,
        expert_program: str = "compact",
        recovery_rate: float = 0.0,
    ):
        super().__init__(max_turns, render_mode, expert_program, recovery_rate)
        if not isinstance(dim, int) or dim < 5:
            raise ValueError(f"dim must be an integer of at least 5, got {dim!r}")
        most_boxes = ((dim - 2) ** 2 - 3) // 2
        if not isinstance(num_boxes, int) or not 1 <= num_boxes <= most_boxes:
            raise ValueError(f"num_boxes must be an integer from 1 to {most_boxes} for dim={dim}, got {num_boxes!r}")
        self.dim = dim
        self.num_boxes = num_boxes
        self.rules = (
            f"Sokoban. The room is drawn one character per cell, rows top to bottom: {board.LEGEND}. "
            "Positions are (row, col), counted from 0 at the top-left corner. The player moves Up, Down, Left or Right "
            "and pushes a box by walking into it, if the cell beyond the box is floor or a goal; "
            "boxes cannot be pulled, and nothing moves into a wall. The puzzle is solved when every box is on a goal."
        )

    def _variant(self) -> str:
        return "" if (self.dim, self.num_boxes) == (6, 1) else f"dim{self.dim}-boxes{self.num_boxes}"

    def _new_puzzle(self) -> None:
        self.room, self.solution = board.generate_room(self.np_random, dim=self.dim, num_boxes=self.num_boxes)

    def _puzzle_text(self) -> str:
        return board.render_room(self.room)

    def _parse_plan(self, text: str) -> list[str]:
        return parse_moves(text)

    def _format_plan(self, plan: list[str]) -> str:
        return format_moves(plan)

    def _check_plan(self, plan: list[str]) -> PlanCheck:
        outcome = board.apply_plan(self.room, plan)
        drawn = board.render_room(outcome.room)
        if outcome.solved:
            return PlanCheck(True, f"solved: every box is on a goal after {outcome.moves_applied} moves.", drawn)
        if outcome.illegal_move is not None:
            number = outcome.moves_applied + 1
            feedback = (
                f"move {number} ({plan[outcome.moves_applied]}) is illegal: {outcome.illegal_move}. "
                f"The room before that move:\n{drawn}"
            )
            return PlanCheck(False, feedback, drawn)
        off_goal = len(outcome.room.boxes - outcome.room.goals)
        feedback = (
            f"all {len(plan)} moves are legal, but {off_goal} of {len(outcome.room.boxes)} boxes are not on a goal. "
            f"The room after the plan:\n{drawn}"
        )
        return PlanCheck(False, feedback, drawn)

    def _wrong_plan(self) -> list[str]:
        # A shortest plan's last move pushes the last box onto its goal, so without it the plan fails.
        return self.solution[:-1]

    def _solver_program(self, wrong: bool) -> str:
        if self.expert_program == "v0":
            rows = board.render_room(self.room).splitlines()
            return embed_solver(board.solve_sokoban, repr(rows), ["answer = answer[:-1]"] if wrong else [])
        return embed_puzzle(self._puzzle_text(), board.SOLVER_PROGRAM, ["plan = plan[:-1]"] if wrong else [])
