"""Sokoban rules for small rooms: generation by reverse play, a BFS solver, moves, rendering.

Pure functions over plain data; the environment lives in `sokoban.py` (the split of
PettingZoo's tictactoe `board.py`). A room is drawn one character per cell, rows top to
bottom, positions are (row, col) counted from 0 at the top-left corner:

    #  wall      _  floor      O  goal
    X  box       √  box on a goal
    P  player    S  player on a goal

The player moves Up, Down, Left or Right; walking into a box pushes it one cell if the cell
beyond is free; boxes cannot be pulled. The room is solved when every box is on a goal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

Position = tuple[int, int]

MOVES: dict[str, Position] = {"Up": (-1, 0), "Down": (1, 0), "Left": (0, -1), "Right": (0, 1)}
LEGEND = "# wall, _ floor, O goal, X box, √ box on a goal, P player, S player on a goal"


@dataclass(frozen=True)
class Room:
    """A square room: the border is wall, and so are the cells in `walls`."""

    dim: int
    walls: frozenset[Position]
    goals: frozenset[Position]
    boxes: frozenset[Position]
    player: Position


@dataclass(frozen=True)
class PlanOutcome:
    """Where a plan left the room, and why it stopped."""

    room: Room
    moves_applied: int
    solved: bool
    illegal_move: str | None = None
    """Why move number `moves_applied + 1` could not be made (None when every move was legal)."""


def is_solved(room: Room) -> bool:
    return room.boxes <= room.goals


def render_room(room: Room) -> str:
    """The room as text, one row per line (legend in the module docstring)."""
    lines = []
    for row in range(room.dim):
        cells = []
        for col in range(room.dim):
            cell = (row, col)
            on_goal = cell in room.goals
            if cell in room.walls:
                cells.append("#")
            elif cell == room.player:
                cells.append("S" if on_goal else "P")
            elif cell in room.boxes:
                cells.append("√" if on_goal else "X")
            else:
                cells.append("O" if on_goal else "_")
        lines.append("".join(cells))
    return "\n".join(lines)


def parse_room(text: str) -> Room:
    """The inverse of `render_room`."""
    lines = text.strip().splitlines()
    walls, goals, boxes, players = set(), set(), set(), []
    for row, line in enumerate(lines):
        if len(line) != len(lines):
            raise ValueError(f"row {row} has {len(line)} cells; a room is square ({len(lines)} rows)")
        for col, char in enumerate(line):
            cell = (row, col)
            if char not in "#_OX√PS":
                raise ValueError(f"unknown cell {char!r} at {cell}; legend: {LEGEND}")
            if char == "#":
                walls.add(cell)
            if char in "O√S":
                goals.add(cell)
            if char in "X√":
                boxes.add(cell)
            if char in "PS":
                players.append(cell)
    if len(players) != 1:
        raise ValueError(f"a room has exactly one player, found {len(players)}")
    return Room(len(lines), frozenset(walls), frozenset(goals), frozenset(boxes), players[0])


def _is_blocked(room: Room, cell: Position) -> bool:
    row, col = cell
    return cell in room.walls or not (0 <= row < room.dim and 0 <= col < room.dim)


def apply_move(room: Room, move: str) -> tuple[Room, str | None]:
    """The room after `move`, and None; or the unchanged room and why the move is illegal."""
    d_row, d_col = MOVES[move]
    target = (room.player[0] + d_row, room.player[1] + d_col)
    if _is_blocked(room, target):
        return room, f"the player at {room.player} would walk into the wall at {target}"
    boxes = room.boxes
    if target in boxes:
        beyond = (target[0] + d_row, target[1] + d_col)
        if _is_blocked(room, beyond):
            return room, f"the box at {target} would be pushed into the wall at {beyond}"
        if beyond in boxes:
            return room, f"the box at {target} would be pushed into the box at {beyond}"
        boxes = (boxes - {target}) | {beyond}
    return replace(room, boxes=boxes, player=target), None


def apply_plan(room: Room, plan: list[str]) -> PlanOutcome:
    """Play `plan` until it solves the room (later moves are ignored) or a move is illegal."""
    for done, move in enumerate(plan):
        if is_solved(room):
            return PlanOutcome(room, done, True)
        room, error = apply_move(room, move)
        if error is not None:
            return PlanOutcome(room, done, False, error)
    return PlanOutcome(room, len(plan), is_solved(room))


# Self-contained, standard library only: the expert's tool program embeds this function's source,
# so its text is training data: the formatter must not change it (that would change collected records).
# fmt: off
def solve_sokoban(rows):
    """A shortest plan (list of "Up"/"Down"/"Left"/"Right") for a room drawn as a list of rows, or None.

    Breadth-first search over (player position, box positions) states.
    """
    from collections import deque

    walls, goals, boxes, player = set(), set(), set(), None
    for r, line in enumerate(rows):
        for c, char in enumerate(line):
            if char == "#":
                walls.add((r, c))
            if char in "O√S":
                goals.add((r, c))
            if char in "X√":
                boxes.add((r, c))
            if char in "PS":
                player = (r, c)

    def blocked(cell):
        r, c = cell
        return cell in walls or not (0 <= r < len(rows) and 0 <= c < len(rows[r]))

    moves = (("Up", -1, 0), ("Down", 1, 0), ("Left", 0, -1), ("Right", 0, 1))
    start = (player, frozenset(boxes))
    came_from = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        (r, c), on_floor = state
        if on_floor <= goals:
            plan = []
            while came_from[state] is not None:
                state, move = came_from[state]
                plan.append(move)
            return plan[::-1]
        for move, dr, dc in moves:
            target = (r + dr, c + dc)
            if blocked(target):
                continue
            next_boxes = on_floor
            if target in on_floor:
                beyond = (target[0] + dr, target[1] + dc)
                if blocked(beyond) or beyond in on_floor:
                    continue
                next_boxes = (on_floor - {target}) | {beyond}
            next_state = (target, next_boxes)
            if next_state not in came_from:
                came_from[next_state] = (state, move)
                queue.append(next_state)
    return None
# fmt: on


# The expert's "compact" tool program, after the `puzzle = """..."""` block that holds the room
# as the prompt draws it (`planning.embed_puzzle`). Training data too, so the formatter keeps out.
# The same breadth-first search as `solve_sokoban` (same move order, first path found wins), so
# it prints the same plan; its last line prints the `Actions:` line (an expert's wrong edit goes before).
# fmt: off
SOLVER_PROGRAM = """\
import json

cells = {(r, c): x for r, row in enumerate(puzzle.split()) for c, x in enumerate(row)}
walls, goals, boxes = ({p for p in cells if cells[p] in s} for s in ("#", "O√S", "X√"))
start = next(p for p in cells if cells[p] in "PS"), frozenset(boxes)
plans, queue = {start: []}, [start]
for state in queue:
    (r, c), boxes = state
    if boxes <= goals:
        break
    for move, dr, dc in ("Up", -1, 0), ("Down", 1, 0), ("Left", 0, -1), ("Right", 0, 1):
        p, q = (r + dr, c + dc), (r + 2 * dr, c + 2 * dc)
        if p in boxes and q not in walls | boxes:
            after = p, boxes - {p} | {q}
        elif p not in walls | boxes:
            after = p, boxes
        else:
            continue
        if after not in plans:
            plans[after] = plans[state] + [move]
            queue.append(after)
plan = plans[state]
print("Actions: " + json.dumps(plan))
"""
# fmt: on


def generate_room(
    rng: np.random.Generator, dim: int = 6, num_boxes: int = 1, min_moves: int = 4
) -> tuple[Room, list[str]]:
    """A room solvable by construction, and its shortest plan.

    Lay out walls and floor, put the boxes on their goals, then play backwards: the player
    walks and pulls boxes off the goals. Every pull undoes a legal push, so the room reached
    is solvable; the BFS solver then finds its shortest plan.
    """
    if dim < 5:
        raise ValueError(f"dim must be at least 5 (a wall border around a 3x3 floor), got {dim}")
    if num_boxes < 1 or 2 * num_boxes + 3 > (dim - 2) ** 2:
        raise ValueError(f"num_boxes must be between 1 and {((dim - 2) ** 2 - 3) // 2} for dim={dim}, got {num_boxes}")
    for _ in range(1000):
        room = _random_layout(rng, dim, num_boxes)
        room = _pull_boxes_off_goals(rng, room, steps=int(rng.integers(4 * dim, 10 * dim)))
        if room is None:
            continue
        plan = solve_sokoban(render_room(room).splitlines())
        assert plan is not None, "reverse play made an unsolvable room"
        if len(plan) >= min_moves:
            return room, plan
    raise RuntimeError(f"could not generate a room with dim={dim}, num_boxes={num_boxes}")


def _random_layout(rng: np.random.Generator, dim: int, num_boxes: int) -> Room:
    """Border walls, a few inner walls that keep the floor connected, boxes on their goals."""
    border = {(r, c) for r in range(dim) for c in range(dim) if r in (0, dim - 1) or c in (0, dim - 1)}
    inner = [(r, c) for r in range(1, dim - 1) for c in range(1, dim - 1)]
    while True:
        count = int(rng.integers(0, len(inner) // 5 + 1))
        chosen = {inner[i] for i in rng.choice(len(inner), size=count, replace=False)}
        floor = [cell for cell in inner if cell not in chosen]
        if len(floor) >= 2 * num_boxes + 3 and _is_connected(floor):
            break
    picks = rng.choice(len(floor), size=num_boxes + 1, replace=False)
    goals = frozenset(floor[i] for i in picks[:-1])
    return Room(dim, frozenset(border | chosen), goals, goals, floor[picks[-1]])


def _is_connected(floor: list[Position]) -> bool:
    cells = set(floor)
    seen = {floor[0]}
    queue = deque([floor[0]])
    while queue:
        r, c = queue.popleft()
        for d_row, d_col in MOVES.values():
            cell = (r + d_row, c + d_col)
            if cell in cells and cell not in seen:
                seen.add(cell)
                queue.append(cell)
    return len(seen) == len(cells)


def _pull_boxes_off_goals(rng: np.random.Generator, room: Room, steps: int) -> Room | None:
    """A random backwards walk; returns the visited room whose boxes ended farthest from their goals."""
    goals = sorted(room.goals)
    boxes = list(goals)  # box i starts on goal i; the list keeps track of which box is which
    player = room.player
    best, best_score = None, 0
    for _ in range(steps):
        d_row, d_col = list(MOVES.values())[int(rng.integers(4))]
        target = (player[0] + d_row, player[1] + d_col)
        if target in room.walls or target in boxes:
            continue
        behind = (player[0] - d_row, player[1] - d_col)
        if behind in boxes and rng.random() < 0.8:
            boxes[boxes.index(behind)] = player
        player = target
        candidate = replace(room, boxes=frozenset(boxes), player=player)
        score = sum(abs(b[0] - g[0]) + abs(b[1] - g[1]) for b, g in zip(boxes, goals))
        if score >= best_score and score > 0 and not is_solved(candidate):
            best, best_score = candidate, score
    return best
