"""The planning environments (sokoban, plan_path, sudoku): the tool/planner flow, parsing, experts.

The real sandbox costs about a quarter of a second per program, so most tests run the
expert's own (trusted) programs in this process instead; a few go through the sandbox.
"""

import contextlib
import io
import traceback

import pytest

import pettingllms
from pettingllms import sandbox
from pettingllms.envs.planning import (
    ReplyParseError,
    answer_text,
    extract_python_block,
    format_moves,
    parse_moves,
    parse_number_grid,
)
from pettingllms.exceptions import ConfigError

ENV_NAMES = ["sokoban", "plan_path", "sudoku"]
BAD_ANSWERS = {  # a reply each planner cannot read, and what the parse error says
    "sokoban": ("Actions: [Up, Jump]", "'Jump' is not a move"),
    "plan_path": ("Actions: []", "is empty"),
    "sudoku": ("Actions: [[1, 2], [3, 4]]", "found 4 numbers"),
}


def run_in_process(code, *, stdin="", timeout_s=5.0, memory_mb=512):
    """A stand-in for `sandbox.run_python`, for the expert's programs only."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "main.py", "exec"), {"__name__": "__main__"})
    except Exception:
        return sandbox.SandboxResult(1, printed.getvalue(), traceback.format_exc(), False)
    return sandbox.SandboxResult(0, printed.getvalue(), "", False)


@pytest.fixture
def fast_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "run_python", run_in_process)


def play(env, seed, wrong_turns=()):
    """One episode of expert replies (wrong on the turn numbers in `wrong_turns`): all step results."""
    env.reset(seed=seed)
    steps = []
    while True:
        steps.append(env.step(env.expert_reply(wrong=len(steps) in wrong_turns)))
        if steps[-1][2] or steps[-1][3]:
            return steps


# -- reading replies -------------------------------------------------------------------


def test_parse_moves_is_lenient_about_form():
    assert parse_moves('Actions: ["Up", "left", "DOWN", "r"]') == ["Up", "Left", "Down", "Right"]
    assert parse_moves("I would go around.\n**Actions:** Up -> Left → D. \nDone") == ["Up", "Left", "Down"]
    assert parse_moves('actions: [\n  "Up",\n  "Right"\n]\nthat is all') == ["Up", "Right"]
    assert parse_moves("Actions: Up\nOn second thought:\nActions: ['Left']") == ["Left"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("Up Left Down", "no 'Actions:' line found"),
        ("Actions: []", "is empty"),
        ("Actions:", "is empty"),
        ("Actions: [Up, Jump]", "'Jump' is not a move"),
        ("Actions: 1. Up 2. Left", "'1' is not a move"),
        ("Actions: [Up, Left", "never closed with ']'"),
    ],
)
def test_parse_moves_never_guesses(text, message):
    with pytest.raises(ReplyParseError, match=message):
        parse_moves(text)


def test_parse_number_grid_reads_lists_and_lines():
    grid = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    assert parse_number_grid(f"Actions: {grid}", 4) == grid
    assert parse_number_grid("Actions:\n1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1\n\nGood luck, 42", 4) == grid
    assert parse_number_grid("Actions: 1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1", 4) == grid
    with pytest.raises(ReplyParseError, match="expected the filled 4x4 grid \\(16 numbers\\).*found 3"):
        parse_number_grid("Actions: [1, 2, 3]", 4)
    with pytest.raises(ReplyParseError, match="too long"):
        parse_number_grid("Actions: " + " ".join(["9" * 5000] * 16), 4)


def test_answer_text_takes_the_last_marker():
    assert answer_text("Actions: [1]\nlater\nACTIONS: [[2], [3]] tail") == "[[2], [3]]"
    assert answer_text("Actions: Up Left\nmore text") == "Up Left"


def test_extract_python_block_takes_the_last_complete_block():
    assert extract_python_block("```python\na = 1\n```\ntext\n```py\nb = 2\n```") == "b = 2\n"
    assert extract_python_block("```\nplain\n```\n```Python\nc = 3\n```") == "c = 3\n"
    for text, message in [
        ("print(1)", "no ```python block found"),
        ("```\nprint(1)\n```", "no ```python block found"),
        ("```python\nprint(1)", "never closed"),
        ("```python\n\n```", "is empty"),
    ]:
        with pytest.raises(ReplyParseError, match=message):
            extract_python_block(text)


# -- every planning env ----------------------------------------------------------------


@pytest.mark.parametrize("name", ENV_NAMES)
def test_make_builds_the_env_with_its_manual(name):
    env = pettingllms.make(name)
    assert env.possible_agents == ("tool", "planner")
    assert env.max_turns == 3
    assert pettingllms.make(name, max_turns=5).max_turns == 5
    for section in ("## Description", "## Agents", "## Observation", "## Action format", "## Success and rewards",
                    "## Episode end", "## Arguments", "## Version history"):  # fmt: skip
        assert section in type(env).__doc__
    with pytest.raises(ConfigError, match="does not take that argument"):
        pettingllms.make(name, no_such_argument=1)


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.slow
def test_expert_solves_200_seeds_in_round_one(name, fast_sandbox):
    env = pettingllms.make(name)
    for seed in range(200):
        (tool_obs, tool_reward, *tool_end, tool_info), planner_step = play(env, seed)
        assert tool_reward == 1.0 and tool_end == [False, False]
        assert tool_info["details"]["output_solves"] is True, seed
        _, reward, terminated, truncated, info = planner_step
        assert (reward, terminated, truncated) == (1.0, True, False), seed
        assert info["success"] is True
        assert info["agent_success"] == {"tool": True, "planner": True}
        assert info["task_id"] == f"{name}-{seed}"


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.slow
def test_expert_program_runs_in_the_real_sandbox(name):
    env = pettingllms.make(name)
    for seed in range(3):
        steps = play(env, seed)
        assert len(steps) == 2 and steps[-1][-1]["success"] is True
        assert steps[0][-1]["details"]["returncode"] == 0
        assert steps[0][-1]["details"]["stdout"].startswith("Actions: ")


@pytest.mark.parametrize("name", ENV_NAMES)
def test_wrong_expert_fails_and_the_episode_truncates(name, fast_sandbox):
    env = pettingllms.make(name)
    for seed in range(20):
        steps = play(env, seed, wrong_turns=range(6))
        assert len(steps) == 6
        assert [step[1] for step in steps] == [0.0] * 6
        assert [step[-1]["valid"] for step in steps] == [True] * 6
        *_, terminated, truncated, info = steps[-1]
        assert (terminated, truncated, info["success"]) == (False, True, False)
        assert info["agent_success"] == {"tool": False, "planner": False}
        assert info["details"]["solved"] is False and info["details"]["feedback"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_planner_can_succeed_when_the_tool_is_wrong(name, fast_sandbox):
    steps = play(pettingllms.make(name), seed=1, wrong_turns={0})
    assert steps[0][1] == 0.0 and steps[0][-1]["details"]["output_solves"] is False
    assert steps[1][-1]["success"] is True
    assert steps[1][-1]["agent_success"] == {"tool": False, "planner": True}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_feedback_reaches_the_next_round(name, fast_sandbox):
    env = pettingllms.make(name)
    steps = play(env, seed=2, wrong_turns={0, 1})
    assert len(steps) == 4 and steps[-1][-1]["success"] is True and steps[-1][-1]["round_idx"] == 2
    tool_prompt = steps[1][0][1]["content"]  # what the tool saw in round 2
    assert "Earlier rounds:\nRound 1: the tool program printed 'Actions: " in tool_prompt
    assert steps[1][-1]["details"]["feedback"] in tool_prompt


@pytest.mark.parametrize("name", ENV_NAMES)
def test_unreadable_replies_are_invalid_actions(name, fast_sandbox):
    env = pettingllms.make(name)
    huge = "garbage " * 200_000
    for reply in ["", "garbage ☃ text", huge, "print('no fence')", "```python\nprint(1)", "Actions: [Up]"]:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(reply)
        assert info["valid"] is False and "```python block" in info["parse_error"]
        assert (reward, terminated, truncated, info["agent"]) == (0.0, False, False, "planner")
        assert info["agent_success"]["tool"] is False
        assert "The tool agent wrote no program this round." in obs[1]["content"]
    bad_answer, message = BAD_ANSWERS[name]
    for reply, expected in [("", "no 'Actions:' line"), (huge, "no 'Actions:' line"), (bad_answer, message)]:
        env.reset(seed=0)
        env.step(env.expert_reply())
        obs, reward, terminated, truncated, info = env.step(reply)
        assert info["valid"] is False and expected in info["parse_error"]
        assert (reward, terminated, truncated, info["agent"]) == (0.0, False, False, "tool")
        assert "the planner's answer could not be read" in obs[1]["content"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_a_crashing_program_is_a_valid_action_that_solves_nothing(name):
    env = pettingllms.make(name)
    env.reset(seed=0)
    obs, reward, _, _, info = env.step("```python\nprint('Actions: almost')\nraise ValueError('boom')\n```")
    assert info["valid"] is True and reward == 0.0
    assert info["details"]["returncode"] == 1 and info["details"]["output_solves"] is False
    assert "It failed with exit code 1" in obs[1]["content"] and "ValueError: boom" in obs[1]["content"]


def test_a_program_that_hangs_times_out():
    env = pettingllms.make("sokoban")
    env.unwrapped.tool_timeout_s = 0.5
    env.reset(seed=0)
    obs, reward, _, _, info = env.step("```python\nwhile True:\n    pass\n```")
    assert info["valid"] is True and info["details"]["timed_out"] is True and reward == 0.0
    assert "It timed out after 0.5 s." in obs[1]["content"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_turns_alternate_and_the_budget_truncates(name):
    env = pettingllms.make(name, max_turns=2)
    obs, info = env.reset(seed=3)
    agents = [info["agent"]]
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step("no idea")
        agents.append(info["agent"])
    assert agents == ["tool", "planner", "tool", "planner", None]
    assert (obs, terminated, truncated, info["success"], info["round_idx"]) == ([], False, True, False, 2)
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step("more")


@pytest.mark.parametrize("name", ENV_NAMES)
def test_observations_are_chat_messages_for_the_acting_agent(name, fast_sandbox):
    env = pettingllms.make(name)
    obs, info = env.reset(seed=4)
    assert [message["role"] for message in obs] == ["system", "user"]
    assert "tool agent" in obs[0]["content"] and "```python" in obs[0]["content"]
    assert env.render() in obs[1]["content"]
    obs, *_ = env.step(env.expert_reply())
    assert "planner agent" in obs[0]["content"] and "Actions:" in obs[0]["content"]
    assert "The tool agent's program this round:\nIt printed:\n```\nActions: " in obs[1]["content"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_same_seed_same_episode(name, fast_sandbox):
    def transcript(env):
        first = env.reset(seed=11)
        steps = []
        for wrong in (True, True, False, False):
            steps.append(env.step(env.expert_reply(wrong=wrong)))
        return first, steps, env.render()

    assert transcript(pettingllms.make(name)) == transcript(pettingllms.make(name))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_seeds_pick_the_puzzle(name):
    env = pettingllms.make(name)
    puzzles = {env.reset(seed=seed)[0][1]["content"] for seed in range(20)}
    assert len(puzzles) >= 18
    assert env.reset(seed=7)[1]["task_id"] == f"{name}-7"
    assert env.reset()[1]["task_id"].startswith(f"{name}-h")


@pytest.mark.parametrize(
    "name, kwargs, task_id",
    [
        ("sokoban", {"dim": 7, "num_boxes": 2}, "sokoban-dim7-boxes2-0"),
        ("plan_path", {"size": 6, "obstacle_ratio": 0.1}, "plan_path-size6-obstacles0.1-0"),
        ("sudoku", {"size": 9, "num_empty": 30}, "sudoku-size9-empty30-0"),
    ],
)
def test_game_arguments(name, kwargs, task_id, fast_sandbox):
    env = pettingllms.make(name, **kwargs)
    for seed in range(10):
        assert play(env, seed)[-1][-1]["success"] is True
    assert env.reset(seed=0)[1]["task_id"] == task_id


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("sokoban", {"dim": 4}, "dim must be an integer of at least 5"),
        ("sokoban", {"num_boxes": 0}, "num_boxes must be an integer from 1 to 6"),
        ("plan_path", {"obstacle_ratio": 0.8}, "obstacle_ratio must be a number from 0 to 0.5"),
        ("sudoku", {"size": 6}, "perfect square"),
        ("sudoku", {"num_empty": 0}, "num_empty must be an integer from 1 to 16"),
        ("sokoban", {"max_turns": 0}, "max_turns must be a positive integer"),
    ],
)
def test_bad_arguments_say_what_is_accepted(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pettingllms.make(name, **kwargs)


def test_sokoban_feedback_names_the_illegal_move(fast_sandbox):
    env = pettingllms.make("sokoban")
    env.reset(seed=0)
    env.step(env.expert_reply())
    *_, info = env.step(format_moves(["Up"] * 10))
    assert info["details"]["feedback"].startswith("move ")
    assert "is illegal: the player at" in info["details"]["feedback"]
    assert env.render() in info["details"]["feedback"]
