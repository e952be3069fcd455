"""Sampling until success: training.min_successes_per_task=k with training.max_samples_per_task=n.

Every task ends with k successes or n attempts, never more than the wave rule allows; the same
config plays the same episodes at any concurrency and after any kill; the stats say how each
task ended. Also: the per-task yield and the tokens spent per kept record of every run, and the
command line saved beside a run.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from test_resume import complete_lines, kill_group, run_collect_command, start_collect, wait_for_lines

from pettingllms.collect import TRANSIENT_ERROR_KINDS, EpisodePlan, collect
from pettingllms.collect import collector as collector_module
from pettingllms.collect.collector import command_line
from pettingllms.collect.schedule import UntilSuccessSchedule, next_samples
from pettingllms.config import load_config
from pettingllms.exceptions import ResumeMismatchError
from pettingllms.models import load_tokenizer
from pettingllms.runfiles import RunFiles, read_ledger

K, N, TASKS = 2, 6, 20
MATH = ["env.name=math_single_agent", "policy=expert", "policy.error_rate=0.5"]
"""The expert at error_rate 0.5 fails a fixed half of the episodes, by a hash of their ids; math is fast."""
UNTIL = [f"training.min_successes_per_task={K}", f"training.max_samples_per_task={N}"]


def until_config(directory: Path, run_name: str, *extra: str, tasks: int = TASKS):
    return load_config(
        [
            *MATH,
            *UNTIL,
            f"training.sft_num_episodes={tasks * N}",
            f"training.sft_data_dir={directory}",
            f"training.run_name={run_name}",
            *extra,
        ]
    )


def outcomes_by_task(files: RunFiles) -> dict[int, dict[int, bool]]:
    """{env_idx: {rollout_idx: succeeded}} from the ledger, checking that no episode was played twice
    (except one that ended in an infrastructure error, retried on resume) nor kept twice."""
    seen: dict[str, dict] = {}
    for line in files.rollouts.read_text().splitlines():
        episode = json.loads(line)
        earlier = seen.get(episode["episode_id"])
        assert earlier is None or earlier["error"]["kind"] in TRANSIENT_ERROR_KINDS, "an episode played twice"
        seen[episode["episode_id"]] = episode
    records = [json.loads(line)["metadata"] for line in files.records.read_text().splitlines()]
    turns = [(record["episode_id"], record["turn_idx"]) for record in records]
    assert len(turns) == len(set(turns)), "a turn kept twice"
    episodes = read_ledger(files.rollouts, repair=False)
    tasks: dict[int, dict[int, bool]] = defaultdict(dict)
    for episode in episodes:
        tasks[episode["env_idx"]][episode["rollout_idx"]] = episode["success"] and not episode["error"]
    return dict(tasks)


def wave_rule_plays(outcomes: dict[int, bool], k: int = K, n: int = N) -> set[int]:
    """The samples the wave rule plays, given how each sample turns out (played one wave at a time)."""
    played: dict[int, bool] = {}
    while wave := next_samples(played, k, n):
        played.update({sample: outcomes[sample] for sample in wave})
    return set(played)


# ---------------------------------------------------------------- the rule, pure


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        ({}, [0, 1]),
        ({0: True, 1: False}, [2]),
        ({0: False, 1: False}, [2, 3]),
        ({0: True, 1: True}, []),
        ({0: False, 1: False, 2: False, 3: True, 4: False}, [5]),
        ({sample: False for sample in range(6)}, []),
        ({1: True}, [0]),  # a wave cut by a kill is completed first
        ({0: True, 1: False, 3: True}, [2]),  # a retried episode is played before a later wave counts
    ],
)
def test_next_samples_plays_waves_of_what_could_still_be_needed(outcomes, expected):
    assert next_samples(outcomes, 2, 6) == expected


def test_the_wave_rule_ends_every_task_at_k_successes_or_n_attempts():
    chooser = random.Random(7)
    for _ in range(500):
        k = chooser.randint(1, 5)
        n = chooser.randint(k, 8)
        luck = chooser.random()
        outcomes = {sample: chooser.random() < luck for sample in range(n)}
        played = wave_rule_plays(outcomes, k, n)
        successes = sum(outcomes[sample] for sample in played)
        assert played == set(range(len(played))), "samples are played in order"
        assert successes == k or (len(played) == n and successes < k)
        # Never a sample that could not have been needed: the last one played was still needed.
        before_last = sum(outcomes[sample] for sample in range(len(played) - 1))
        assert before_last < k


def test_the_schedule_plays_the_same_episodes_whatever_order_they_end_in():
    plan = EpisodePlan(until_config(Path("unused"), "r", tasks=12))
    succeeds = {spec.episode_id: random.Random(spec.episode_id).random() < 0.4 for spec in plan}
    expected = set()
    for task in plan.my_tasks():
        specs = plan.task_specs(task, range(N))
        outcomes = {spec.rollout_idx: succeeds[spec.episode_id] for spec in specs}
        expected |= {specs[sample].episode_id for sample in wave_rule_plays(outcomes)}

    async def play(workers: int, seed: int, finished: list[str] = ()) -> list[str]:
        episodes = [
            {**vars(spec), "success": succeeds[spec.episode_id], "error": None}
            for spec in plan
            if spec.episode_id in finished
        ]
        schedule, chooser, played = UntilSuccessSchedule(plan, episodes), random.Random(seed), []

        async def worker():
            while (spec := await schedule.next_episode()) is not None:
                for _ in range(chooser.randint(0, 3)):  # episodes end in a random order
                    await asyncio.sleep(0)
                played.append(spec.episode_id)
                schedule.record(spec, succeeds[spec.episode_id])

        await asyncio.gather(*(worker() for _ in range(workers)))
        return played

    for workers, seed in ((1, 0), (5, 1), (32, 2)):
        played = asyncio.run(play(workers, seed))
        assert len(played) == len(set(played)) and set(played) == expected
    # Resumed after any number of episodes (in the order a concurrent run ended them): the rest, once each.
    order = asyncio.run(play(5, 3))
    for cut in (1, 9, 20, len(order) - 1, len(order)):
        rest = asyncio.run(play(4, cut, order[:cut]))
        assert sorted(order[:cut] + rest) == sorted(expected)


def test_a_short_last_task_and_shards_split_the_plan_by_task():
    def plan(*extra: str) -> EpisodePlan:
        return EpisodePlan(until_config(Path("unused"), "r", "training.sft_num_episodes=40", *extra))

    whole = plan()
    assert whole.tasks == 7 and len(whole) == 40  # six tasks of 6 samples and one of 4
    shards = [plan("training.num_shards=3", f"training.shard_index={index}") for index in range(3)]
    assert sum(len(shard) for shard in shards) == 40
    for index, shard in enumerate(shards):
        specs = list(shard)
        assert len(specs) == len(shard) and {spec.env_idx % 3 for spec in specs} == {index}
    assert sorted(spec.index for shard in shards for spec in shard) == [spec.index for spec in whole]


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> RunFiles:
    """A finished run at concurrency 8 (read-only: tests copy it before changing anything)."""
    return collect(until_config(tmp_path_factory.mktemp("reference"), "ref", "training.rollout_concurrency=8")).files


@pytest.mark.slow
def test_every_task_ends_at_k_successes_or_n_attempts_and_the_stats_say_which(reference):
    tasks = outcomes_by_task(reference)
    assert sorted(tasks) == list(range(TASKS))
    reached = hit = 0
    for outcomes in tasks.values():
        successes = sum(outcomes.values())
        assert set(outcomes) == wave_rule_plays(outcomes), "played exactly what the wave rule asks for"
        assert successes == K or (len(outcomes) == N and successes < K)
        reached += successes >= K
        hit += successes < K
    assert hit, "at error_rate 0.5, some task must use all its samples (or the test shows nothing)"
    stats = json.loads(reference.stats.read_text())
    assert stats["per_task"] == {
        "tasks": TASKS,
        "solved_by_all": sum(all(outcomes.values()) for outcomes in tasks.values()),
        "solved_by_some": sum(any(o.values()) and not all(o.values()) for o in tasks.values()),
        "solved_by_none": sum(not any(outcomes.values()) for outcomes in tasks.values()),
        "min_successes": K,
        "max_samples": N,
        "reached_min_successes": reached,
        "hit_max_samples": hit,
    }
    assert stats["total_episodes"] == sum(len(outcomes) for outcomes in tasks.values()) < TASKS * N


@pytest.mark.slow
def test_concurrency_does_not_change_which_episodes_are_played(reference, tmp_path):
    alone = collect(until_config(tmp_path, "alone", "training.rollout_concurrency=1")).files
    ids = lambda files: sorted(episode["episode_id"] for episode in read_ledger(files.rollouts))  # noqa: E731
    assert ids(alone) == ids(reference)


def copy_run(files: RunFiles, directory: Path) -> RunFiles:
    shutil.copytree(files.directory, directory)
    return RunFiles(directory, files.run_name)


@pytest.mark.slow
@pytest.mark.parametrize("kept_lines", [0, 1, 7, 30])
def test_a_run_cut_at_any_episode_resumes_to_the_same_episodes(reference, tmp_path, kept_lines):
    """The ledger's first lines, and the records of those episodes and the next, are what a kill at
    that moment leaves (with half a ledger line being written)."""
    files = copy_run(reference, tmp_path / "run")
    lines = files.rollouts.read_bytes().splitlines(keepends=True)
    files.rollouts.write_bytes(b"".join(lines[:kept_lines]) + lines[kept_lines][:40])
    written = {json.loads(line)["episode_id"] for line in lines[: kept_lines + 1]}
    records = files.records.read_bytes().splitlines(keepends=True)
    files.records.write_bytes(
        b"".join(line for line in records if json.loads(line)["metadata"]["episode_id"] in written)
    )
    resumed = collect(until_config(files.directory, "ref", "training.rollout_concurrency=3"))
    assert outcomes_by_task(resumed.files) == outcomes_by_task(reference)
    records = [json.loads(line) for line in resumed.files.records.read_text().splitlines()]
    assert len(records) == resumed.stats["kept_records"] == json.loads(reference.stats.read_text())["kept_records"]


@pytest.mark.slow
def test_a_finished_run_resumed_plays_nothing(reference, tmp_path, monkeypatch, capsys):
    files = copy_run(reference, tmp_path / "run")
    ledger = files.rollouts.read_bytes()

    async def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run must not start an episode")

    monkeypatch.setattr(collector_module, "run_episode", must_not_run)
    result = collect(until_config(files.directory, "ref"))
    assert files.rollouts.read_bytes() == ledger
    played = result.stats["total_episodes"]
    assert f"{played} of at most {TASKS * N} episodes played" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_mid_run_then_resumed_plays_each_episode_once(tmp_path):
    tasks = 500  # a few seconds of math episodes: time to kill the run in the middle of its waves
    killed = RunFiles(tmp_path / "killed", "k")
    command = [
        sys.executable, "-m", "pettingllms", "collect", *MATH, *UNTIL, f"training.sft_num_episodes={tasks * N}",
        "training.rollout_concurrency=4", f"training.sft_data_dir={killed.directory}", "training.run_name=k",
    ]  # fmt: skip
    process = start_collect(command)
    try:
        reached = wait_for_lines(killed.rollouts, 200, process)
    finally:
        stderr = kill_group(process)
    assert reached and process.returncode == -signal.SIGKILL, f"the run ended by itself: {stderr[-2000:]!r}"
    cut = complete_lines(killed.rollouts)
    finished = run_collect_command(command)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"Resuming run 'k': {cut} episodes already collected" in finished.stderr
    reference = collect(until_config(tmp_path / "reference", "r", tasks=tasks)).files
    assert outcomes_by_task(killed) == outcomes_by_task(reference)


# ---------------------------------------------------------------- mistakes


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.min_successes_per_task=7", "training.max_samples_per_task=6"], "training.min_successes_per_task=7"),
        (["training.min_successes_per_task=2"], "training.max_samples_per_task=None is invalid"),
        (
            [*UNTIL, "training.num_samples_per_task=3"],
            "training.max_samples_per_task is the number of samples",
        ),
    ],
)
def test_bad_settings_are_one_line_from_the_command_line(tmp_path, overrides, message):
    refused = run_collect_command(
        [sys.executable, "-m", "pettingllms", "collect", *MATH, *overrides, f"training.sft_data_dir={tmp_path}"],
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ") and "Traceback" not in line
    assert message in line
    assert not any(tmp_path.iterdir()), "a refused start writes nothing"


@pytest.mark.slow
def test_resuming_with_another_k_is_refused(reference, tmp_path):
    files = copy_run(reference, tmp_path / "run")
    before = files.rollouts.read_bytes()
    config = until_config(files.directory, "ref", "training.min_successes_per_task=1")
    with pytest.raises(ResumeMismatchError, match=r"training.min_successes_per_task: files have 2, now 1"):
        collect(config)
    assert files.rollouts.read_bytes() == before


@pytest.mark.slow
def test_a_run_saved_before_these_keys_existed_resumes(tmp_path):
    def normal_run(episodes: int):
        return collect(load_config([*MATH, f"training.sft_num_episodes={episodes}", f"training.sft_data_dir={tmp_path}",
                                    "training.run_name=old"]))  # fmt: skip

    files = normal_run(4).files
    saved = json.loads(files.config.read_text())
    for key in ("training.min_successes_per_task", "training.max_samples_per_task"):
        del saved["identity"][key]
    files.config.write_text(json.dumps(saved))
    assert normal_run(6).stats["total_episodes"] == 6


# ---------------------------------------------------------------- every run: yield and tokens spent


@pytest.mark.slow
def test_a_normal_run_reports_task_yield_and_tokens_spent(tmp_path):
    config = load_config(
        [*MATH, "training.num_samples_per_task=3", "training.sft_num_episodes=30", f"training.sft_data_dir={tmp_path}"]
    )
    result = collect(config)
    tasks = outcomes_by_task(result.files)
    per_task = result.stats["per_task"]
    assert (
        per_task["tasks"] == 10 == per_task["solved_by_all"] + per_task["solved_by_some"] + per_task["solved_by_none"]
    )
    assert per_task["solved_by_some"] == sum(any(o.values()) and not all(o.values()) for o in tasks.values()) > 0
    assert per_task["solved_by_all"] == sum(all(outcomes.values()) for outcomes in tasks.values())
    assert [per_task[key] for key in ("min_successes", "max_samples", "reached_min_successes", "hit_max_samples")] == [
        None
    ] * 4
    # The expert reports no usage: every reply is counted with the tokenizer of the kept-record lengths.
    tokenizer = load_tokenizer(result.stats["kept_record_tokens"]["tokenizer"])
    replies = [turn["response"] for episode in read_ledger(result.files.rollouts) for turn in episode["turns"]]
    spent = sum(len(tokenizer.encode(reply, add_special_tokens=False)) for reply in replies)
    assert result.stats["tokens_spent_per_kept_record"] == round(spent / result.stats["kept_records"], 1)
    assert result.stats["kept_records"] < len(replies), "failed episodes' replies are spent too"


# ---------------------------------------------------------------- the saved command line


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/bin/pettingllms", "collect", "env.name=sokoban"], "pettingllms collect env.name=sokoban"),
        (["/src/pettingllms/__main__.py", "collect", "x=a b"], "pettingllms collect 'x=a b'"),
        (["my_script.py", "--flag"], "my_script.py --flag"),
    ],
)
def test_the_command_line_is_saved_as_a_user_would_type_it(argv, expected):
    assert command_line(argv) == expected


@pytest.mark.slow
def test_the_saved_command_is_the_latest_start_and_resume_ignores_it(reference, tmp_path):
    files = copy_run(reference, tmp_path / "run")
    saved = json.loads(files.config.read_text())
    assert saved["command"] == command_line(sys.argv)
    files.config.write_text(json.dumps({**saved, "command": "pettingllms collect something else"}))
    collect(until_config(files.directory, "ref"))
    assert json.loads(files.config.read_text())["command"] == command_line(sys.argv)
