"""Path planning on a square grid with obstacles: generation, a BFS shortest path, moves, rendering.

Pure functions over plain data; the environment lives in `plan_path.py`. A grid is drawn one
character per cell, rows top to bottom, positions are (row, col) counted from 0 at the
top-left corner:

    .  free      #  obstacle      S  start      G  goal      *  a cell the path walked through

A move (Up, Down, Left, Right) goes to the next cell; leaving the grid or entering an
obstacle is illegal. A path succeeds when it reaches the goal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

Position = tuple[int, int]

MOVES: dict[str, Position] = {"Up": (-1, 0), "Down": (1, 0), "Left": (0, -1), "Right": (0, 1)}
LEGEND = ". free, # obstacle, S start, G goal"


@dataclass(frozen=True)
class Grid:
    size: int
    obstacles: frozenset[Position]
    start: Position
    goal: Position


@dataclass(frozen=True)
class PathOutcome:
    """Where a path ended, and why it stopped."""

    cells: list[Position]
    """Every cell the path stood on, the start first."""
    reached_goal: bool
    illegal_move: str | None = None
    """Why move number `len(cells)` could not be made (None when every move was legal)."""

    @property
    def moves_applied(self) -> int:
        return len(self.cells) - 1


def render_grid(grid: Grid, walked: list[Position] = ()) -> str:
    """The grid as text, one row per line; cells in `walked` (other than S and G) show as '*'."""
    walked = set(walked)
    lines = []
    for row in range(grid.size):
        cells = []
        for col in range(grid.size):
            cell = (row, col)
            if cell == grid.start:
                cells.append("S")
            elif cell == grid.goal:
                cells.append("G")
            elif cell in grid.obstacles:
                cells.append("#")
            else:
                cells.append("*" if cell in walked else ".")
        lines.append("".join(cells))
    return "\n".join(lines)


def parse_grid(text: str) -> Grid:
    """The inverse of `render_grid` (for a grid drawn without a path)."""
    lines = text.strip().splitlines()
    obstacles, starts, goals = set(), [], []
    for row, line in enumerate(lines):
        if len(line) != len(lines):
            raise ValueError(f"row {row} has {len(line)} cells; a grid is square ({len(lines)} rows)")
        for col, char in enumerate(line):
            if char not in ".#SG":
                raise ValueError(f"unknown cell {char!r} at {(row, col)}; legend: {LEGEND}")
            if char == "#":
                obstacles.add((row, col))
            elif char == "S":
                starts.append((row, col))
            elif char == "G":
                goals.append((row, col))
    if len(starts) != 1 or len(goals) != 1:
        raise ValueError(f"a grid has one start and one goal, found {len(starts)} and {len(goals)}")
    return Grid(len(lines), frozenset(obstacles), starts[0], goals[0])


def apply_move(grid: Grid, position: Position, move: str) -> tuple[Position, str | None]:
    """The cell after `move`, and None; or the same cell and why the move is illegal."""
    d_row, d_col = MOVES[move]
    target = (position[0] + d_row, position[1] + d_col)
    if not (0 <= target[0] < grid.size and 0 <= target[1] < grid.size):
        return position, f"from {position} it would leave the grid"
    if target in grid.obstacles:
        return position, f"from {position} it would enter the obstacle at {target}"
    return target, None


def apply_path(grid: Grid, plan: list[str]) -> PathOutcome:
    """Walk `plan` from the start until it reaches the goal (later moves are ignored) or a move is illegal."""
    cells = [grid.start]
    for move in plan:
        if cells[-1] == grid.goal:
            break
        position, error = apply_move(grid, cells[-1], move)
        if error is not None:
            return PathOutcome(cells, False, error)
        cells.append(position)
    return PathOutcome(cells, cells[-1] == grid.goal)


# Self-contained, standard library only: the expert's tool program embeds this function's source,
# so its text is training data: the formatter must not change it (that would change collected records).
# fmt: off
def find_shortest_path(rows):
    """A shortest list of moves ("Up"/"Down"/"Left"/"Right") from S to G in a grid drawn as rows, or None.

    Breadth-first search over the free cells.
    """
    from collections import deque

    start = goal = None
    for r, line in enumerate(rows):
        for c, char in enumerate(line):
            if char == "S":
                start = (r, c)
            if char == "G":
                goal = (r, c)
    moves = (("Up", -1, 0), ("Down", 1, 0), ("Left", 0, -1), ("Right", 0, 1))
    came_from = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            path = []
            while came_from[cell] is not None:
                cell, move = came_from[cell]
                path.append(move)
            return path[::-1]
        for move, dr, dc in moves:
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < len(rows) and 0 <= c < len(rows[r]) and rows[r][c] != "#" and (r, c) not in came_from:
                came_from[(r, c)] = (cell, move)
                queue.append((r, c))
    return None
# fmt: on


# The expert's "compact" tool program, after the `puzzle = """..."""` block that holds the grid
# as the prompt draws it (`planning.embed_puzzle`). Training data too, so the formatter keeps out.
# The same breadth-first search as `find_shortest_path` (same move order, first path found wins),
# so it prints the same path; its last line prints the `Actions:` line (an expert's wrong edit goes before).
# fmt: off
SOLVER_PROGRAM = """\
import json

cells = {(r, c): x for r, row in enumerate(puzzle.split()) for c, x in enumerate(row)}
start = next(p for p in cells if cells[p] == "S")
plans, queue = {start: []}, [start]
for r, c in queue:
    for move, dr, dc in ("Up", -1, 0), ("Down", 1, 0), ("Left", 0, -1), ("Right", 0, 1):
        p = r + dr, c + dc
        if cells.get(p, "#") != "#" and p not in plans:
            plans[p] = plans[r, c] + [move]
            queue.append(p)
plan = next(plans[p] for p in plans if cells[p] == "G")
print("Actions: " + json.dumps(plan))
"""
# fmt: on


def generate_grid(
    rng: np.random.Generator, size: int = 10, obstacle_ratio: float = 0.25, min_distance: int | None = None
) -> tuple[Grid, list[str]]:
    """A grid whose goal is reachable from its start, and a shortest path.

    Obstacles are scattered at random; the goal is drawn among the cells reachable from the
    start at least `min_distance` moves away (default: half the grid's side).
    """
    if size < 3:
        raise ValueError(f"size must be at least 3, got {size}")
    if not 0.0 <= obstacle_ratio <= 0.5:
        raise ValueError(f"obstacle_ratio must be between 0 and 0.5, got {obstacle_ratio}")
    if min_distance is None:
        min_distance = max(2, size // 2)
    cells = [(r, c) for r in range(size) for c in range(size)]
    num_obstacles = round(obstacle_ratio * len(cells))
    for _ in range(1000):
        chosen = rng.choice(len(cells), size=num_obstacles, replace=False)
        obstacles = frozenset(cells[i] for i in chosen)
        free = [cell for cell in cells if cell not in obstacles]
        start = free[int(rng.integers(len(free)))]
        distances = _distances_from(size, obstacles, start)
        far = sorted(cell for cell, distance in distances.items() if distance >= min_distance)
        if not far:
            continue
        grid = Grid(size, obstacles, start, far[int(rng.integers(len(far)))])
        path = find_shortest_path(render_grid(grid).splitlines())
        assert path is not None and len(path) == distances[grid.goal]
        return grid, path
    raise RuntimeError(
        f"could not place a start and a goal {min_distance} moves apart (size={size}, obstacle_ratio={obstacle_ratio})"
    )


def _distances_from(size: int, obstacles: frozenset[Position], start: Position) -> dict[Position, int]:
    grid = Grid(size, obstacles, start, start)
    distances = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for move in MOVES:
            target, error = apply_move(grid, cell, move)
            if error is None and target not in distances:
                distances[target] = distances[cell] + 1
                queue.append(target)
    return distances
