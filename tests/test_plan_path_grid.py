"""Path-planning rules: generation, the BFS shortest path, moves and rendering (pettingllms/envs/plan_path_grid.py)."""

import numpy as np
import pytest

from pettingllms.envs.plan_path_grid import (
    apply_move,
    apply_path,
    find_shortest_path,
    generate_grid,
    parse_grid,
    render_grid,
)

SEEDS = range(200)

HAND_MADE = "\n".join(
    [
        "S.#",
        ".##",
        "..G",
    ]
)


def test_same_seed_gives_the_same_grid():
    for seed in range(20):
        assert generate_grid(np.random.default_rng(seed)) == generate_grid(np.random.default_rng(seed))


def test_different_seeds_give_different_grids():
    grids = {render_grid(generate_grid(np.random.default_rng(seed))[0]) for seed in SEEDS}
    assert len(grids) == len(SEEDS)


@pytest.mark.parametrize("size, obstacle_ratio", [(10, 0.25), (5, 0.0), (8, 0.4), (20, 0.3)])
def test_every_generated_grid_connects_start_and_goal(size, obstacle_ratio):
    seeds = SEEDS if size == 10 else range(50)
    for seed in seeds:
        grid, path = generate_grid(np.random.default_rng(seed), size=size, obstacle_ratio=obstacle_ratio)
        assert grid.size == size
        assert len(grid.obstacles) == round(obstacle_ratio * size * size)
        assert grid.start not in grid.obstacles and grid.goal not in grid.obstacles
        assert len(path) >= max(2, size // 2)
        outcome = apply_path(grid, path)
        assert outcome.reached_goal and outcome.illegal_move is None, seed
        assert outcome.moves_applied == len(path)
        assert not apply_path(grid, path[:-1]).reached_goal


def test_the_path_is_a_shortest_one():
    assert find_shortest_path(HAND_MADE.splitlines()) == ["Down", "Down", "Right", "Right"]
    walled_in = ["S#.", "##.", "..G"]
    assert find_shortest_path(walled_in) is None


def test_illegal_moves_say_why_and_stay_put():
    grid = parse_grid(HAND_MADE)
    assert apply_move(grid, (0, 0), "Up") == ((0, 0), "from (0, 0) it would leave the grid")
    assert apply_move(grid, (0, 1), "Right") == ((0, 1), "from (0, 1) it would enter the obstacle at (0, 2)")
    assert apply_move(grid, (0, 0), "Down") == ((1, 0), None)


def test_a_path_stops_at_its_first_illegal_move_and_at_the_goal():
    grid = parse_grid(HAND_MADE)
    stuck = apply_path(grid, ["Right", "Down"])
    assert not stuck.reached_goal
    assert stuck.cells == [(0, 0), (0, 1)]
    assert "obstacle at (1, 1)" in stuck.illegal_move
    done = apply_path(grid, ["Down", "Down", "Right", "Right", "Up", "Up"])
    assert done.reached_goal and done.moves_applied == 4
    short = apply_path(grid, ["Down", "Down", "Right"])
    assert not short.reached_goal and short.illegal_move is None and short.cells[-1] == (2, 1)


def test_rendering_marks_the_walked_cells_and_parses_back():
    grid = parse_grid(HAND_MADE)
    assert render_grid(grid) == HAND_MADE
    walked = apply_path(grid, ["Down", "Down", "Right", "Right"]).cells
    assert render_grid(grid, walked) == "S.#\n*##\n**G"
    for seed in range(20):
        generated, _ = generate_grid(np.random.default_rng(seed))
        assert parse_grid(render_grid(generated)) == generated


def test_bad_grids_and_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown cell 'x'"):
        parse_grid("S.\n.x")
    with pytest.raises(ValueError, match="one start and one goal"):
        parse_grid("S.\n..")
    with pytest.raises(ValueError, match="size must be at least 3"):
        generate_grid(np.random.default_rng(0), size=2)
    with pytest.raises(ValueError, match="obstacle_ratio must be between 0 and 0.5"):
        generate_grid(np.random.default_rng(0), obstacle_ratio=0.9)
