"""Sokoban rules: generation, the BFS solver, moves and rendering (pettingllms/envs/sokoban_board.py)."""

import numpy as np
import pytest

from pettingllms.envs.sokoban_board import (
    Room,
    apply_move,
    apply_plan,
    generate_room,
    is_solved,
    parse_room,
    render_room,
    solve_sokoban,
)

SEEDS = range(200)

# A hand-made room: the player at (2, 1), a box at (2, 2) one push left of the goal at (2, 3),
# and a box already on the goal at (3, 1), against the wall.
HAND_MADE = "\n".join(
    [
        "######",
        "#____#",
        "#PXO_#",
        "#√___#",
        "#____#",
        "######",
    ]
)


def test_same_seed_gives_the_same_room():
    for seed in range(20):
        first = generate_room(np.random.default_rng(seed))
        second = generate_room(np.random.default_rng(seed))
        assert first == second


@pytest.mark.slow
def test_different_seeds_give_different_rooms():
    rooms = {render_room(generate_room(np.random.default_rng(seed))[0]) for seed in SEEDS}
    assert len(rooms) > 180


@pytest.mark.parametrize("dim, num_boxes", [(6, 1), (6, 2), (5, 1), (8, 3)])
@pytest.mark.slow
def test_every_generated_room_is_solved_by_its_plan(dim, num_boxes):
    seeds = SEEDS if (dim, num_boxes) == (6, 1) else range(50)
    for seed in seeds:
        room, plan = generate_room(np.random.default_rng(seed), dim=dim, num_boxes=num_boxes)
        assert room.dim == dim and len(room.boxes) == num_boxes == len(room.goals)
        assert not is_solved(room)
        assert len(plan) >= 4
        outcome = apply_plan(room, plan)
        assert outcome.solved and outcome.illegal_move is None, seed
        assert outcome.moves_applied == len(plan)
        # A shortest plan's last move finishes the job, so one move less fails.
        assert not apply_plan(room, plan[:-1]).solved


def test_the_solver_finds_shortest_plans():
    room = parse_room(HAND_MADE)
    assert solve_sokoban(HAND_MADE.splitlines()) == ["Right"]
    assert apply_plan(room, ["Right"]).solved
    # Already solved: nothing to do.
    solved = render_room(apply_plan(room, ["Right"]).room)
    assert solve_sokoban(solved.splitlines()) == []


def test_the_solver_says_none_for_a_stuck_box():
    stuck = ["#####", "#X__#", "#_P_#", "#__O#", "#####"]  # a box in a corner never moves
    assert solve_sokoban(stuck) is None


def test_walking_into_a_wall_is_illegal_and_changes_nothing():
    room = parse_room(HAND_MADE)
    after, error = apply_move(room, "Left")
    assert after == room
    assert error == "the player at (2, 1) would walk into the wall at (2, 0)"


def test_pushing_a_box_into_a_wall_or_a_box_is_illegal():
    room = parse_room(HAND_MADE)
    # Player (2, 1) walks down into the box at (3, 1), which would hit (4, 1): free, so legal.
    pushed, error = apply_move(room, "Down")
    assert error is None and (4, 1) in pushed.boxes and pushed.player == (3, 1)
    # Pushing it again drives it into the border wall.
    _, error = apply_move(pushed, "Down")
    assert error == "the box at (4, 1) would be pushed into the wall at (5, 1)"
    two_in_a_row = parse_room("\n".join(["######", "#PXX_#", "#__O_#", "#__O_#", "#____#", "######"]))
    _, error = apply_move(two_in_a_row, "Right")
    assert error == "the box at (1, 2) would be pushed into the box at (1, 3)"


def test_a_plan_stops_at_its_first_illegal_move():
    room = parse_room(HAND_MADE)
    outcome = apply_plan(room, ["Up", "Up", "Up"])
    assert not outcome.solved
    assert outcome.moves_applied == 1
    assert outcome.room.player == (1, 1)
    assert "wall at (0, 1)" in outcome.illegal_move


def test_moves_after_the_solution_are_ignored():
    room = parse_room(HAND_MADE)
    outcome = apply_plan(room, ["Right", "Right", "Left"])
    assert outcome.solved and outcome.moves_applied == 1


def test_rendering_uses_the_legend_and_parses_back():
    room = parse_room(HAND_MADE)
    assert render_room(room) == HAND_MADE
    solved = apply_plan(room, ["Right"]).room
    assert render_room(solved).splitlines()[2] == "#_P√_#"
    on_goal = Room(6, room.walls, frozenset({(1, 1)}), frozenset({(2, 2)}), (1, 1))
    assert render_room(on_goal).splitlines()[1][1] == "S"
    for seed in range(20):
        generated, _ = generate_room(np.random.default_rng(seed))
        assert parse_room(render_room(generated)) == generated


def test_bad_rooms_and_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown cell 'Q'"):
        parse_room("###\n#Q#\n###")
    with pytest.raises(ValueError, match="exactly one player"):
        parse_room("####\n#__#\n#__#\n####")
    with pytest.raises(ValueError, match="dim must be at least 5"):
        generate_room(np.random.default_rng(0), dim=4)
    with pytest.raises(ValueError, match="num_boxes must be between 1 and"):
        generate_room(np.random.default_rng(0), dim=5, num_boxes=4)
