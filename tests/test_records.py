from collections import Counter

from pettingllms.records import CollectionStats, RecordFilter, make_record, record_key


def turn(agent, turn_idx, trainable=True, valid=True, response="reply"):
    return {
        "turn_idx": turn_idx,
        "agent": agent,
        "policy_name": "shared_model",
        "trainable": trainable,
        "messages": [{"role": "user", "content": f"prompt {agent} {turn_idx}"}],
        "response": response,
        "reward": 1.0,
        "valid": valid,
        "parse_error": None if valid else "bad",
        "details": {},
        "prompt_tokens": 3,
        "completion_tokens": 2,
    }


def episode(episode_id, success, agent_success=None, error=None, task_id="t0", turns=None):
    return {
        "episode_id": episode_id,
        "env_name": "sokoban",
        "env_idx": 0,
        "rollout_idx": 0,
        "seed": 0,
        "task_id": task_id,
        "success": success,
        "agent_success": agent_success or {},
        "error": error,
        "turns": turns if turns is not None else [turn("tool", 0), turn("planner", 1)],
    }


def test_record_format_is_trl_conversational_with_metadata():
    record = make_record(episode("e1", True), turn("tool", 0, response="Actions: [Up]"))
    assert record["messages"][-1] == {"role": "assistant", "content": "Actions: [Up]"}
    assert record["messages"][0]["role"] == "user"
    for key in (
        "agent_name",
        "policy_name",
        "reward",
        "env_success",
        "env_name",
        "env_idx",
        "rollout_idx",
        "turn_idx",
        "episode_id",
    ):
        assert key in record["metadata"]
    assert record["metadata"]["agent_name"] == "tool" and record["metadata"]["env_success"] is True


def test_only_successful_episodes_are_kept_and_drops_are_counted():
    keep = RecordFilter(only_success=True)
    assert len(keep.keep(episode("a", True))) == 2
    assert keep.keep(episode("b", False)) == []
    assert keep.keep(episode("c", True, error={"kind": "timeout", "message": "x"})) == []
    assert keep.removed == Counter(not_successful=2, error_episode=2)


def test_only_success_false_keeps_failures_too():
    assert len(RecordFilter(only_success=False).keep(episode("b", False))) == 2


def test_agent_mode_keeps_turns_by_the_agents_own_success():
    keep = RecordFilter(collect_mode="agent")
    kept = keep.keep(episode("a", False, agent_success={"tool": True, "planner": False}))
    assert [r["metadata"]["agent_name"] for r in kept] == ["tool"]


def test_non_trainable_agents_never_become_records():
    keep = RecordFilter(only_success=False)
    kept = keep.keep(episode("a", True, turns=[turn("user_sim", 0, trainable=False), turn("doctor", 1)]))
    assert [r["metadata"]["agent_name"] for r in kept] == ["doctor"]
    assert keep.removed["not_trainable"] == 1


def test_dedup_and_cap_per_task():
    dedup = RecordFilter(dedup=True)
    assert len(dedup.keep(episode("a", True))) == 2
    assert len(dedup.keep(episode("b", True))) == 0  # same agents, prompts and replies
    assert dedup.removed["duplicate"] == 2
    capped = RecordFilter(max_records_per_task=3)
    assert len(capped.keep(episode("a", True))) == 2
    assert len(capped.keep(episode("b", True))) == 1
    assert len(capped.keep(episode("c", True, task_id="t1"))) == 2
    assert capped.removed["max_records_per_task"] == 1


def test_record_key_depends_on_agent_prompt_and_response():
    base = make_record(episode("a", True), turn("tool", 0))
    assert record_key(base) == record_key(make_record(episode("zzz", True), turn("tool", 0)))
    assert record_key(base) != record_key(make_record(episode("a", True), turn("tool", 0, response="other")))
    assert record_key(base) != record_key(make_record(episode("a", True), turn("planner", 0)))


def test_stats_count_episodes_and_turns_as_they_are():
    keep, stats = RecordFilter(), CollectionStats("sokoban", "run")
    episodes = [
        episode("a", True),
        episode("b", False),
        episode("c", False, error={"kind": "timeout", "message": ""}),
        episode("d", True, turns=[turn("tool", 0, valid=False), turn("planner", 1)]),
    ]
    for item in episodes:
        stats.add(item, keep.keep(item))
    result = stats.to_dict(2.0, keep.removed)
    assert result["total_episodes"] == 4 and result["successful_episodes"] == 2
    assert result["failed_episodes"] == 1 and result["error_episodes"] == 1
    assert result["success_rate"] == 0.5
    assert result["total_records"] == 8 and result["kept_records"] == 4
    assert result["per_agent"] == {"planner": {"collected": 4, "kept": 2}, "tool": {"collected": 4, "kept": 2}}
    assert result["errors"] == {"timeout": 1} and result["invalid_actions"] == 1
    assert result["episodes_per_s"] == 2.0
    assert result["usage"] == {"prompt_tokens": 24, "completion_tokens": 16}


# ---------------------------------------------------------------- quality filters


def test_each_quality_filter_drops_and_counts_its_turns():
    def tool(**fields):
        return {**turn("tool", 0), **fields}

    cases = [
        (RecordFilter(drop_truncated=True), tool(finish_reason="length"), "truncated"),
        (
            RecordFilter(drop_crashed_programs=True),
            tool(details={"returncode": 1, "timed_out": False}),
            "crashed_program",
        ),
        (RecordFilter(max_reply_chars=4), tool(response="12345"), "reply_too_long"),
        (RecordFilter(agents=("planner",)), tool(), "agent_not_selected"),
        (RecordFilter(min_reward=0.5), tool(reward=0.0), "reward_below_min"),
    ]
    for keep, dropped, reason in cases:
        assert keep.keep(episode("a", True, turns=[dropped])) == [], reason
        assert keep.removed == Counter({reason: 1})
    # Off by default: collection with the defaults keeps what it always kept.
    assert len(RecordFilter().keep(episode("a", True, turns=[case[1] for case in cases]))) == len(cases)
    assert len(RecordFilter(max_reply_chars=5, min_reward=1.0).keep(episode("a", True, turns=[tool(response="12345")])))


def test_max_invalid_actions_drops_whole_episodes_counting_every_agent():
    invalid = [turn("tool", 0, valid=False), turn("planner", 1), turn("tool", 2, valid=False)]
    assert len(RecordFilter(max_invalid_actions=2).keep(episode("a", True, turns=invalid))) == 3
    strict = RecordFilter(max_invalid_actions=1)
    assert strict.keep(episode("a", True, turns=invalid)) == []
    assert strict.removed == Counter(too_many_invalid_actions=3)
    assert len(RecordFilter(max_invalid_actions=0).keep(episode("b", True))) == 2


def test_drop_reasons_are_checked_in_their_documented_order():
    from pettingllms.records import DROP_REASONS

    keep = RecordFilter(only_success=True, max_invalid_actions=0, drop_truncated=True)
    keep.keep(episode("a", False, turns=[{**turn("tool", 0, valid=False), "finish_reason": "length"}]))
    keep.keep(episode("b", True, turns=[{**turn("tool", 0, valid=False), "finish_reason": "length"}]))
    keep.keep(episode("c", True, turns=[{**turn("tool", 0), "finish_reason": "length"}]))
    assert keep.removed == Counter(not_successful=1, too_many_invalid_actions=1, truncated=1)
    assert DROP_REASONS.index("not_successful") < DROP_REASONS.index("too_many_invalid_actions")
    assert DROP_REASONS.index("too_many_invalid_actions") < DROP_REASONS.index("truncated")


def test_crashed_programs_as_each_env_records_them():
    from pettingllms.records import program_crashed

    ok = {"returncode": 0, "timed_out": False, "stopped_for": None}
    # planning envs: the tool agent's run is the details themselves
    assert not program_crashed({**ok, "stdout": "Actions: [1]", "output_solves": False})
    assert program_crashed({**ok, "returncode": 1})
    assert program_crashed({**ok, "returncode": None, "stopped_for": "output_limit"})
    assert program_crashed({**ok, "timed_out": True})
    # math env: the tool agent's run is details["program"]
    assert program_crashed({"program": {**ok, "returncode": 1, "stderr_tail": "AssertionError"}, "answer": None})
    assert not program_crashed({"program": ok, "answer": "4"})
    # code env: a failed hidden test is a wrong answer; any other error is a crash
    failed_assert = {**ok, "passed": False, "returncode": 1, "stderr_tail": "Traceback ...\nAssertionError"}
    raised = {**ok, "passed": False, "returncode": 1, "stderr_tail": "Traceback ...\nNameError: name 'x'"}
    assert not program_crashed({"ground_truth": failed_assert})
    assert program_crashed({"ground_truth": raised})
    assert program_crashed({"reference_agreement": {**ok, "passed": False, "timed_out": True}})
    assert not program_crashed({"ground_truth": {"passed": True, "cases": 3}, "generated_tests": raised})
    # turns that ran no program
    assert not program_crashed({}) and not program_crashed({"plan": [1], "solved": True})


def test_filter_settings_come_from_saved_runs_and_old_runs_keep_the_defaults():
    from pettingllms.config.schema import TrainingConfig

    old = {"only_success": False, "collect_mode": "agent", "dedup": True, "max_records_per_task": 3, "seed": 4}
    loaded = RecordFilter.from_settings(old)
    assert (loaded.only_success, loaded.collect_mode, loaded.dedup, loaded.max_records_per_task) == (
        False,
        "agent",
        True,
        3,
    )
    assert loaded.near_dedup_threshold is None and loaded.drop_truncated is False and loaded.max_invalid_actions is None
    settings = RecordFilter.from_settings(TrainingConfig(near_dedup_threshold=0.8, drop_truncated=True)).settings()
    assert settings["near_dedup_threshold"] == 0.8 and settings["drop_truncated"] is True
    assert settings["agents"] == [] and settings["min_reward"] is None


# ---------------------------------------------------------------- near-duplicates


def test_near_duplicate_replies_of_one_task_and_agent_are_dropped():
    text = "I will push the box up, then left, then walk around it and push it down into the goal square."
    similar = text.replace("goal square.", "goal square!").upper().replace(" ", "  \n")
    keep = RecordFilter(near_dedup_threshold=0.8)
    assert len(keep.keep(episode("a", True, turns=[turn("tool", 0, response=text)]))) == 1
    assert keep.keep(episode("b", True, turns=[turn("tool", 0, response=similar)])) == []
    assert keep.removed == Counter(near_duplicate=1)
    # another agent, another task, or a different reply: kept
    assert len(keep.keep(episode("c", True, turns=[turn("planner", 0, response=text)]))) == 1
    assert len(keep.keep(episode("d", True, task_id="t1", turns=[turn("tool", 0, response=text)]))) == 1
    other = "Move right twice, then up: the box reaches the goal and the level is solved in four moves."
    assert len(keep.keep(episode("e", True, turns=[turn("tool", 0, response=other)]))) == 1


def test_near_dedup_counts_exact_duplicates_under_their_own_reason():
    keep = RecordFilter(dedup=True, near_dedup_threshold=0.9)
    keep.keep(episode("a", True))
    keep.keep(episode("b", True))
    assert keep.removed == Counter(duplicate=2)


def test_shingles_ignore_case_and_whitespace():
    from pettingllms.near_duplicates import jaccard, shingles

    assert shingles("Push  the box\nup now") == shingles("push the BOX up now")
    assert len(shingles("a b c d e")) == 3 and len(shingles("two words")) == 1
    assert jaccard(shingles("a b c d"), shingles("a b c e")) == 1 / 3
    assert jaccard(shingles(""), shingles("  ")) == 1.0


def test_near_duplicate_index_agrees_with_comparing_every_pair():
    import random

    from pettingllms.near_duplicates import NearDuplicateIndex, jaccard, shingles

    rng = random.Random(0)
    words = [f"w{i}" for i in range(12)]
    template = "def solve ( grid ) : return".split()
    texts = []
    for _ in range(300):  # small vocabulary and a shared template: many close pairs, and index rebuilds
        body = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        texts.append(" ".join(template + body if rng.random() < 0.5 else body))
    for threshold in (0.3, 0.5, 0.8, 1.0):
        index, kept, answers, expected = NearDuplicateIndex(threshold), [], [], []
        for text in texts:
            found = index.contains("group", text)
            answers.append(found)
            expected.append(any(jaccard(shingles(text), other) >= threshold for other in kept))
            if not found:
                index.add("group", text)
                kept.append(shingles(text))
        assert answers == expected, threshold
        assert 0 < sum(answers) < len(texts)
