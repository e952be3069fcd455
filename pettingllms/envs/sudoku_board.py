"""Sudoku rules for small grids: generation with a unique solution, a backtracking solver, checks.

Pure functions over plain data; the environment lives in `sudoku.py`. A grid is a list of
rows of ints, 0 for an empty cell, with side `size` a perfect square (4: 2x2 boxes, 9: 3x3
boxes). Positions are (row, col) counted from 0 at the top-left corner. A solution fills
every empty cell with 1..size so that no row, column or box repeats a value, and keeps the
given cells as they are.
"""

from __future__ import annotations

import math

import numpy as np

Grid = list[list[int]]


def box_side(size: int) -> int:
    side = math.isqrt(size)
    if side < 2 or side * side != size:
        raise ValueError(f"size must be a perfect square of at least 4 (4, 9, ...), got {size}")
    return side


def render_grid(grid: Grid, empty: str = ".") -> str:
    """One row per line, cells separated by spaces, `empty` ('.' or '0') for an empty cell."""
    return "\n".join(" ".join(str(value) if value else empty for value in row) for row in grid)


def parse_grid(text: str) -> Grid:
    """The inverse of `render_grid`."""
    return [[0 if cell == "." else int(cell) for cell in line.split()] for line in text.strip().splitlines()]


def find_conflicts(grid: Grid) -> list[str]:
    """Every row, column or box that holds a value twice, in words (empty cells are ignored)."""
    size = len(grid)
    side = box_side(size)
    groups = [(f"row {r}", [(r, c) for c in range(size)]) for r in range(size)]
    groups += [(f"column {c}", [(r, c) for r in range(size)]) for c in range(size)]
    for top in range(0, size, side):
        for left in range(0, size, side):
            cells = [(top + i, left + j) for i in range(side) for j in range(side)]
            groups.append((f"the box at rows {top}-{top + side - 1}, columns {left}-{left + side - 1}", cells))
    conflicts = []
    for name, cells in groups:
        values = [grid[r][c] for r, c in cells if grid[r][c]]
        for value in sorted({v for v in values if values.count(v) > 1}):
            times = "twice" if values.count(value) == 2 else f"{values.count(value)} times"
            conflicts.append(f"{name} holds {value} {times}")
    return conflicts


def check_answer(puzzle: Grid, answer: Grid) -> list[str]:
    """What is wrong with `answer` as a solution of `puzzle`, in words; empty when it solves it."""
    size = len(puzzle)
    if len(answer) != size or any(len(row) != size for row in answer):
        return [f"the answer is not a {size}x{size} grid"]
    problems = []
    for r in range(size):
        for c in range(size):
            if not 1 <= answer[r][c] <= size:
                problems.append(f"cell {(r, c)} holds {answer[r][c]}, not a value in 1..{size}")
            elif puzzle[r][c] and answer[r][c] != puzzle[r][c]:
                problems.append(f"cell {(r, c)} is given as {puzzle[r][c]} but the answer has {answer[r][c]}")
    return problems + find_conflicts(answer)


# Self-contained, standard library only: the expert's tool program embeds this function's source,
# so its text is training data: the formatter must not change it (that would change collected records).
# fmt: off
def solve_sudoku(grid):
    """A filled copy of `grid` (rows of ints, 0 = empty), or None when it has no solution.

    Backtracking search that always fills the empty cell with the fewest candidates.
    """
    n = len(grid)
    side = int(round(n ** 0.5))
    cells = [list(row) for row in grid]

    def candidates(r, c):
        top, left = r - r % side, c - c % side
        used = set(cells[r]) | {cells[i][c] for i in range(n)}
        used |= {cells[i][j] for i in range(top, top + side) for j in range(left, left + side)}
        return [v for v in range(1, n + 1) if v not in used]

    def search():
        best = None
        for r in range(n):
            for c in range(n):
                if cells[r][c] == 0:
                    options = candidates(r, c)
                    if best is None or len(options) < len(best[2]):
                        best = (r, c, options)
        if best is None:
            return True
        r, c, options = best
        for value in options:
            cells[r][c] = value
            if search():
                return True
        cells[r][c] = 0
        return False

    for r in range(n):
        for c in range(n):
            value = cells[r][c]
            if value:
                cells[r][c] = 0
                allowed = value in candidates(r, c)
                cells[r][c] = value
                if not allowed:
                    return None
    return cells if search() else None
# fmt: on


# The expert's "compact" tool program, after the `puzzle = """..."""` block that holds the grid
# as the prompt draws it (`planning.embed_puzzle`). Training data too, so the formatter keeps out.
# Plain backtracking, the first empty cell first, smallest value first: it finds the puzzle's
# unique solution (or the first completion of a puzzle with several); its last line prints the
# `Actions:` line (an expert's wrong edit goes before).
# fmt: off
SOLVER_PROGRAM = """\
grid = [[0 if x == "." else int(x) for x in row.split()] for row in puzzle.strip().splitlines()]
n = len(grid)
k = int(n ** 0.5)


def solve():
    for r in range(n):
        for c in range(n):
            if grid[r][c] == 0:
                box = [grid[r - r % k + i // k][c - c % k + i % k] for i in range(n)]
                for v in range(1, n + 1):
                    if v not in grid[r] + [row[c] for row in grid] + box:
                        grid[r][c] = v
                        if solve():
                            return True
                grid[r][c] = 0
                return False
    return True


solve()
print("Actions:", grid)
"""
# fmt: on


def count_solutions(grid: Grid, limit: int = 2) -> int:
    """How many solutions `grid` has, counting no further than `limit`."""
    if find_conflicts(grid):
        return 0
    size, side = len(grid), box_side(len(grid))
    cells = [list(row) for row in grid]

    def candidates(r: int, c: int) -> list[int]:
        top, left = r - r % side, c - c % side
        used = set(cells[r]) | {cells[i][c] for i in range(size)}
        used |= {cells[i][j] for i in range(top, top + side) for j in range(left, left + side)}
        return [value for value in range(1, size + 1) if value not in used]

    def count() -> int:
        empty = [(r, c) for r in range(size) for c in range(size) if cells[r][c] == 0]
        if not empty:
            return 1
        r, c, options = min(((r, c, candidates(r, c)) for r, c in empty), key=lambda item: len(item[2]))
        found = 0
        for value in options:
            cells[r][c] = value
            found += count()
            cells[r][c] = 0
            if found >= limit:
                break
        return found

    return min(count(), limit)


def generate_puzzle(rng: np.random.Generator, size: int = 4, num_empty: int = 6) -> tuple[Grid, Grid]:
    """A puzzle with `num_empty` empty cells, and its solution.

    The solution is a shuffled pattern grid (digits relabelled, rows and columns permuted
    within their bands and stacks, bands and stacks permuted, maybe transposed). Cells are
    then emptied in random order, skipping any whose removal would allow a second solution;
    if the puzzle cannot reach `num_empty` that way, the last cells are emptied anyway, so
    such a puzzle has several solutions and any of them counts.
    """
    side = box_side(size)
    if not 1 <= num_empty <= size * size:
        raise ValueError(f"num_empty must be between 1 and {size * size}, got {num_empty}")
    solution = _shuffled_solution(rng, size, side)
    puzzle = [list(row) for row in solution]
    order = [(int(i) // size, int(i) % size) for i in rng.permutation(size * size)]
    skipped = []
    emptied = 0
    for r, c in order:
        if emptied == num_empty:
            break
        value, puzzle[r][c] = puzzle[r][c], 0
        if count_solutions(puzzle) == 1:
            emptied += 1
        else:
            puzzle[r][c] = value
            skipped.append((r, c))
    for r, c in skipped[: num_empty - emptied]:
        puzzle[r][c] = 0
    return puzzle, solution


def _shuffled_solution(rng: np.random.Generator, size: int, side: int) -> Grid:
    pattern = [[(side * (r % side) + r // side + c) % size for c in range(size)] for r in range(size)]
    digits = rng.permutation(size) + 1
    rows = [int(band) * side + int(i) for band in rng.permutation(side) for i in rng.permutation(side)]
    cols = [int(stack) * side + int(i) for stack in rng.permutation(side) for i in rng.permutation(side)]
    grid = [[int(digits[pattern[r][c]]) for c in cols] for r in rows]
    if rng.random() < 0.5:
        grid = [list(column) for column in zip(*grid)]
    return grid
