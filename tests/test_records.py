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
