"""The planning envs' learnable expert: the "compact" tool program, recovery episodes, and v0 kept as it was.

The compact program copies the puzzle verbatim and is shorter; it still solves every seed,
printing exactly the planner's answer (so the planner's turn is a copy). Most tests run the
expert's own (trusted) programs in this process, a few go through the real sandbox.
"""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from test_planning_envs import run_in_process

import pettingllms
from pettingllms import sandbox
from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.envs.checker import check_env
from pettingllms.envs.planning import extract_python_block, is_recovery_episode

ENV_NAMES = ["sokoban", "plan_path", "sudoku"]
GAME_ARGUMENTS = {
    "sokoban": {"dim": 7, "num_boxes": 2},
    "plan_path": {"size": 6},
    "sudoku": {"size": 9, "num_empty": 30},
}
V0_TOOL_REPLIES_SHA256 = {
    "sokoban": "61152c6812d71a17a144af80fcb8249258a3f724a773a5c8eab1dfd4588dbce4",
    "plan_path": "2ef05c59c02113fba98abcca83d054206a028952f5d72d0aeb3962d4c9528702",
    "sudoku": "c8c49d7570858c31f3605066c5ca942cce78da28ad6fddb1abbb4495318c5e22",
}
"""`v0_tool_replies_digest` of the v0 envs, computed before the compact program existed."""


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny built-in model's tokenizer (Qwen2's pre-tokenizer)."""
    from pettingllms.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(None))


@pytest.fixture
def fast_sandbox(monkeypatch):
    """The expert's own programs run in this process (`run_in_process`), not in the sandbox."""
    monkeypatch.setattr(sandbox, "run_python", run_in_process)


def play_expert(env, seed):
    """One episode of the expert's replies (`wrong=False`): all step results."""
    env.reset(seed=seed)
    steps = []
    while True:
        steps.append(env.step(env.expert_reply()))
        if steps[-1][2] or steps[-1][3]:
            return steps


def puzzle_in_prompt(obs):
    """The puzzle text as the tool's prompt shows it."""
    user = obs[1]["content"]
    return user.split("The puzzle:\n", 1)[1].split("\n\n", 1)[0]


def v0_tool_replies_digest(env, seeds=range(20)):
    """sha256 of the expert tool's first replies, right then wrong, on `seeds`."""
    digest = hashlib.sha256()
    for seed in seeds:
        env.reset(seed=seed)
        for wrong in (False, True):
            digest.update(env.expert_reply(wrong=wrong).encode())
    return digest.hexdigest()


# -- the compact program ---------------------------------------------------------------


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_program_opens_with_the_prompts_puzzle_verbatim(name):
    env = pettingllms.make(name)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        puzzle = puzzle_in_prompt(obs)
        assert puzzle == env.render()
        program = extract_python_block(env.expert_reply())
        assert program.startswith(f'puzzle = """\n{puzzle}\n"""\n'), seed
        assert program.count(puzzle) == 1


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_program_has_far_fewer_tokens_than_v0(name, tokenizer):
    compact, v0 = pettingllms.make(name), pettingllms.make(name, expert_program="v0")
    ratios = []
    for seed in range(5):
        programs = []
        for env in (compact, v0):
            env.reset(seed=seed)
            programs.append(extract_python_block(env.expert_reply()))
        lengths = [len(tokenizer(program)["input_ids"]) for program in programs]
        ratios.append(lengths[0] / lengths[1])
    # Measured: sokoban 412 / 764, plan_path 312 / 581, sudoku 278 / 633 tokens on seed 0.
    assert max(ratios) < 0.6, ratios


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_program_prints_the_planners_answer_on_300_seeds(name, fast_sandbox):
    env = pettingllms.make(name)
    for seed in range(300):
        (_, tool_reward, *_, tool_info), (_, reward, terminated, _, info) = play_expert(env, seed)
        assert (tool_reward, reward, terminated, info["success"]) == (1.0, 1.0, True, True), seed
        # The planner's answer is a copy of the line the program printed.
        assert tool_info["details"]["stdout"].strip() == env.unwrapped._format_plan(env.unwrapped.solution), seed


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_program_solves_other_game_arguments(name, fast_sandbox):
    env = pettingllms.make(name, **GAME_ARGUMENTS[name])
    for seed in range(10):
        assert play_expert(env, seed)[-1][-1]["success"] is True, seed


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_wrong_program_prints_the_planners_wrong_answer(name, fast_sandbox):
    env = pettingllms.make(name)
    for seed in range(20):
        env.reset(seed=seed)
        _, reward, *_, info = env.step(env.expert_reply(wrong=True))
        assert reward == 0.0 and info["details"]["output_solves"] is False
        assert info["details"]["stdout"].strip() == env.unwrapped._format_plan(env.unwrapped._wrong_plan())


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_program_runs_in_the_real_sandbox(name):
    env = pettingllms.make(name)
    for seed in range(3):
        steps = play_expert(env, seed)
        assert len(steps) == 2 and steps[-1][-1]["success"] is True
        assert steps[0][-1]["details"]["returncode"] == 0


def test_an_unknown_expert_program_says_which_exist():
    with pytest.raises(ValueError, match="expert_program must be one of compact, v0, got 'v2'"):
        pettingllms.make("sudoku", expert_program="v2")


# -- v0 stays available ----------------------------------------------------------------


@pytest.mark.parametrize("name", ENV_NAMES)
def test_expert_program_v0_writes_the_v0_programs_byte_for_byte(name):
    env = pettingllms.make(name, expert_program="v0")
    assert v0_tool_replies_digest(env) == V0_TOOL_REPLIES_SHA256[name]
    env.reset(seed=0)
    assert "\nPUZZLE = [" in env.expert_reply()


@pytest.mark.parametrize("name", ENV_NAMES)
def test_expert_program_v0_still_solves(name, fast_sandbox):
    env = pettingllms.make(name, expert_program="v0")
    for seed in range(10):
        assert play_expert(env, seed)[-1][-1]["success"] is True, seed


# -- recovery episodes -----------------------------------------------------------------


@pytest.mark.parametrize("name", ENV_NAMES)
def test_a_recovery_episode_is_wrong_in_round_one_then_solved_with_history(name, fast_sandbox):
    env = pettingllms.make(name, recovery_rate=1.0)
    for seed in range(5):
        steps = play_expert(env, seed)
        assert env.unwrapped.recovery_episode is True
        assert len(steps) == 4 and [step[1] for step in steps] == [0.0, 0.0, 1.0, 1.0]
        assert all(step[-1]["valid"] for step in steps)
        assert steps[1][-1]["details"]["solved"] is False
        *_, terminated, truncated, info = steps[-1]
        assert (terminated, truncated, info["success"], info["round_idx"]) == (True, False, True, 2)
        assert info["agent_success"] == {"tool": True, "planner": True}
        for prompt in (steps[1][0], steps[2][0]):  # what the tool, then the planner, saw in round 2
            assert "\n\nEarlier rounds:\nRound 1: the tool program printed 'Actions: " in prompt[1]["content"]
            assert steps[1][-1]["details"]["feedback"] in prompt[1]["content"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_policys_wrong_episodes_stay_wrong_in_a_recovery_episode(name, fast_sandbox):
    env = pettingllms.make(name, recovery_rate=1.0)
    env.reset(seed=0)
    while True:
        *_, terminated, truncated, info = env.step(env.expert_reply(wrong=True))
        if terminated or truncated:
            break
    assert (truncated, info["success"]) == (True, False)


def test_recovery_episodes_are_a_share_of_tasks_chosen_by_task_id():
    env = pettingllms.make("sudoku", recovery_rate=0.3)
    chosen = []
    for seed in range(400):
        env.reset(seed=seed)
        chosen.append(env.unwrapped.recovery_episode)
        assert chosen[-1] == is_recovery_episode(f"sudoku-{seed}", 0.3)
    assert 0.22 < sum(chosen) / len(chosen) < 0.38
    # The same task in any order, in another env object: the same choice.
    other = pettingllms.make("sudoku", recovery_rate=0.3)
    for seed in (399, 7, 0, 123):
        other.reset(seed=seed)
        assert other.unwrapped.recovery_episode == chosen[seed]
    assert not any(is_recovery_episode(f"sudoku-{seed}", 0.0) for seed in range(400))
    assert all(is_recovery_episode(f"sudoku-{seed}", 1.0) for seed in range(400))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"recovery_rate": 0.2, "max_turns": 1}, r"recovery_rate=0.2 needs max_turns >= 2"),
        ({"recovery_rate": 1.5}, "recovery_rate must be a number from 0 to 1"),
        ({"recovery_rate": "half"}, "recovery_rate must be a number from 0 to 1"),
    ],
)
def test_bad_recovery_rates_say_what_is_accepted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pettingllms.make("plan_path", **kwargs)


def test_collected_recovery_episodes_put_later_rounds_in_the_data(tmp_path, fast_sandbox):
    config = load_config(
        [
            f"training.sft_data_dir={tmp_path}",
            "training.run_name=recovery",
            "env.name=sudoku",
            "env.kwargs.recovery_rate=0.5",
            "policy=expert",
            "training.sft_num_episodes=12",
            "training.rollout_concurrency=4",
        ]
    )
    result = collect(config)
    assert result.stats["success_rate"] == 1.0
    records = [json.loads(line) for line in result.files.records.read_text().splitlines()]
    later = [record for record in records if record["metadata"]["turn_idx"] >= 2]
    recovered = {record["metadata"]["episode_id"] for record in later}
    expected = {f"sudoku-train-{seed}-0" for seed in range(12) if is_recovery_episode(f"sudoku-{seed}", 0.5)}
    assert recovered == expected and expected
    assert all("Earlier rounds:\nRound 1:" in record["messages"][1]["content"] for record in later)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENV_NAMES)
def test_the_checker_passes_with_recovery_episodes(name):
    check_env(name, expert_seeds=range(3), recovery_rate=0.5)


# -- the demo scripts ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("script", ["planner_only.sh", "both_agents.sh"])
def test_the_demo_script_runs_small_and_prints_before_and_after(script, tmp_path):
    demo = Path(__file__).parent.parent / "scripts" / "demo" / script
    small = ["training.sft_num_episodes=8", "training.sft_config.max_steps=2", "eval.num_episodes=2"]
    if script == "both_agents.sh":
        small.append("policy.max_tokens=16")  # the untrained model's replies: noise, cut short
    run = subprocess.run(
        ["bash", str(demo), *small], cwd=tmp_path, env={**os.environ, "OUT": str(tmp_path / "out")},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "before / after training, 2 test episodes" in run.stdout
    assert "load average before:" in run.stdout and "wall time:" in run.stdout
    assert (tmp_path / "out" / "model").is_dir()


# -- sudoku's empty_cell ---------------------------------------------------------------


def test_sudoku_empty_cell_zero_draws_zeros_and_the_expert_still_solves(fast_sandbox):
    dots, zeros = pettingllms.make("sudoku"), pettingllms.make("sudoku", empty_cell="0")
    for seed in range(50):
        dotted = puzzle_in_prompt(dots.reset(seed=seed)[0])
        obs, _ = zeros.reset(seed=seed)
        assert puzzle_in_prompt(obs) == dotted.replace(".", "0"), seed
        assert "'0' for an empty cell" in obs[1]["content"]
        assert extract_python_block(zeros.expert_reply()).startswith(f'puzzle = """\n{dotted.replace(".", "0")}\n')
        steps = play_expert(zeros, seed)
        assert len(steps) == 2 and steps[-1][-1]["success"] is True, seed
    # The default is the '.' it always was.
    assert "'.' for an empty cell" in dots.reset(seed=0)[0][1]["content"]


def test_sudoku_empty_cell_zero_gives_every_puzzle_the_same_length_in_tokens(tokenizer):
    """Why `empty_cell="0"` exists: the tiny model's (Qwen2's) pre-tokenizer merges " ." and
    " .\\n" into one token, so with '.' the puzzle's length in tokens depends on where its empty
    cells are, and copying it into the program is not a copy from a fixed distance back."""
    lengths = {}
    for empty in (".", "0"):
        env = pettingllms.make("sudoku", empty_cell=empty)
        puzzles = [puzzle_in_prompt(env.reset(seed=seed)[0]) for seed in range(30)]
        lengths[empty] = {len(tokenizer(puzzle)["input_ids"]) for puzzle in puzzles}
    assert len(lengths["0"]) == 1 and len(lengths["."]) > 1, lengths


@pytest.mark.parametrize("value", ["", "_", " ", "1", 1, 0.0, None, ".."])
def test_sudoku_bad_empty_cells_say_what_is_accepted(value):
    with pytest.raises(ValueError, match=r"empty_cell must be '\.' or '0', got"):
        pettingllms.make("sudoku", empty_cell=value)


def test_sudoku_empty_cell_from_the_command_line_is_accepted_as_the_integer_zero(tmp_path, fast_sandbox):
    config = load_config(
        [
            "env.name=sudoku", "policy=expert", "env.kwargs.empty_cell=0", "training.sft_num_episodes=3",
            f"training.sft_data_dir={tmp_path}", "training.run_name=zeros",
        ]
    )  # fmt: skip
    collect(config)
    records = [json.loads(line) for line in (tmp_path / "sft_data_zeros.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert all("'0' for an empty cell" in record["messages"][1]["content"] for record in records)
