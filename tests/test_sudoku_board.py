"""Sudoku rules: generation, the backtracking solver and the checks (pettingllms/envs/sudoku_board.py)."""

import numpy as np
import pytest

from pettingllms.envs.sudoku_board import (
    box_side,
    check_answer,
    count_solutions,
    find_conflicts,
    generate_puzzle,
    parse_grid,
    render_grid,
    solve_sudoku,
)

SEEDS = range(200)

SOLUTION = [
    [1, 2, 3, 4],
    [3, 4, 1, 2],
    [2, 1, 4, 3],
    [4, 3, 2, 1],
]
PUZZLE = [
    [1, 0, 3, 0],
    [0, 4, 0, 2],
    [2, 0, 4, 0],
    [0, 3, 0, 1],
]


def empty_cells(grid):
    return sum(value == 0 for row in grid for value in row)


def test_same_seed_gives_the_same_puzzle():
    for seed in range(20):
        assert generate_puzzle(np.random.default_rng(seed)) == generate_puzzle(np.random.default_rng(seed))


def test_different_seeds_give_different_puzzles():
    puzzles = {render_grid(generate_puzzle(np.random.default_rng(seed))[0]) for seed in SEEDS}
    assert len(puzzles) > 180


def test_every_generated_puzzle_has_one_solution_that_the_solver_finds():
    for seed in SEEDS:
        puzzle, solution = generate_puzzle(np.random.default_rng(seed))
        assert empty_cells(puzzle) == 6
        assert check_answer(puzzle, solution) == []
        assert count_solutions(puzzle) == 1, seed
        assert solve_sudoku(puzzle) == solution


@pytest.mark.parametrize("size, num_empty", [(4, 1), (4, 12), (4, 16), (9, 40)])
@pytest.mark.slow
def test_other_sizes_and_counts_give_valid_puzzles(size, num_empty):
    for seed in range(20 if size == 4 else 5):
        puzzle, solution = generate_puzzle(np.random.default_rng(seed), size=size, num_empty=num_empty)
        assert empty_cells(puzzle) == num_empty
        assert check_answer(puzzle, solution) == []
        solved = solve_sudoku(puzzle)
        assert solved is not None and check_answer(puzzle, solved) == []


def test_any_valid_completion_counts_when_the_puzzle_is_not_unique():
    empty = [[0] * 4 for _ in range(4)]
    assert count_solutions(empty) == 2  # counting stops at the limit
    assert count_solutions(empty, limit=1000) == 288
    assert check_answer(empty, SOLUTION) == []


def test_check_answer_names_each_problem():
    assert check_answer(PUZZLE, SOLUTION) == []
    changed_given = [row[:] for row in SOLUTION]
    changed_given[0][0], changed_given[0][1] = 2, 1
    problems = check_answer(PUZZLE, changed_given)
    assert "cell (0, 0) is given as 1 but the answer has 2" in problems
    assert "column 0 holds 2 twice" in problems
    out_of_range = [row[:] for row in SOLUTION]
    out_of_range[1][0] = 7
    assert "cell (1, 0) holds 7, not a value in 1..4" in check_answer(PUZZLE, out_of_range)
    assert check_answer(PUZZLE, [[1, 2, 3]]) == ["the answer is not a 4x4 grid"]


def test_conflicts_cover_rows_columns_and_boxes():
    grid = [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert find_conflicts(grid) == [
        "row 0 holds 1 twice",
        "column 0 holds 1 twice",
        "the box at rows 0-1, columns 0-1 holds 1 3 times",
    ]
    assert find_conflicts(PUZZLE) == []


def test_the_solver_says_none_for_contradictory_givens():
    assert solve_sudoku([[1, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4]) is None
    # No direct repeat, but cell (0, 3) has no value left.
    assert solve_sudoku([[1, 2, 3, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]) is None
    assert count_solutions([[1, 2, 3, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]) == 0


def test_rendering_parses_back():
    assert render_grid(PUZZLE) == "1 . 3 .\n. 4 . 2\n2 . 4 .\n. 3 . 1"
    assert parse_grid(render_grid(PUZZLE)) == PUZZLE


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="perfect square"):
        box_side(6)
    with pytest.raises(ValueError, match="num_empty must be between 1 and 16"):
        generate_puzzle(np.random.default_rng(0), num_empty=17)
