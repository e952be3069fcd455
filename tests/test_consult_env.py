"""The consultation environment: the case table, the rule-based patient, the expert doctor, rewards, case files."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest

import pettingllms
from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.envs.checker import play
from pettingllms.envs.consult import REWARD_WEIGHTS, ConsultEnv, reply_lines
from pettingllms.envs.consult_cases import (
    CONDITIONS,
    TOPICS,
    condition_aliases,
    distinguishing_topics,
    generate_case,
    match_topic,
    named_conditions,
    patient_answer,
)
from pettingllms.exceptions import DataError

SEEDS = range(300)


def expert(env):
    return env.expert_reply()


def case_of(name: str):
    """A generated case of condition `name`."""
    for seed in range(1000):
        case = generate_case(np.random.default_rng(seed))
        if case.diagnosis == name:
            return case
    raise AssertionError(f"no case of {name}")


# -- the table and the rule-based patient -------------------------------------------------


def test_each_complaint_leaves_several_candidates():
    groups = Counter(condition.group for condition in CONDITIONS)
    assert 12 <= len(CONDITIONS) <= 20
    assert min(groups.values()) >= 4


def test_every_topic_question_is_recognised_as_its_topic():
    for topic, spec in TOPICS.items():
        assert match_topic(spec.question) == topic, spec.question


@pytest.mark.parametrize(
    "question, topic",
    [
        ("How long have you had the fever?", "duration"),  # the topic named first wins
        ("Any fever? And how long has it been?", "fever"),
        ("Are you bringing up phlegm when you cough?", "sputum"),
        ("Does bright light hurt your eyes?", "light"),
        ("Have you been vomiting?", "nausea"),
        ("Tell me everything about your symptoms.", None),
    ],
)
def test_match_topic(question, topic):
    assert match_topic(question) == topic


def test_the_patient_answers_only_what_is_asked():
    case = case_of("meningitis")
    assert patient_answer(case, "Is your neck stiff?") == "So stiff I can't put my chin on my chest."
    assert patient_answer(case, "Do you have a runny nose?") == TOPICS["runny_nose"].negative
    vague = patient_answer(case, "What else is wrong?")
    assert "not sure what you mean" in vague
    assert all(finding not in vague for finding in case.findings.values())


def label(condition, topic: str) -> str:
    return condition.findings[topic].label if topic in condition.findings else "no"


def test_the_experts_questions_tell_each_condition_from_its_group():
    for condition in CONDITIONS:
        asked = distinguishing_topics(case_of(condition.name))
        same_answers = [
            other.name
            for other in CONDITIONS
            if other.group == condition.group and all(label(other, t) == label(condition, t) for t in asked)
        ]
        assert same_answers == [condition.name], (condition.name, asked, same_answers)
        assert sum(topic in condition.findings for topic in asked) >= 2, "the diagnosis rests on findings"
        assert len(asked) <= 4


@pytest.mark.parametrize(
    "text, named",
    [
        ("Strep throat", {"strep throat"}),
        ("streptococcal pharyngitis", {"strep throat"}),  # not also viral "pharyngitis"
        ("probably the FLU.", {"influenza"}),
        ("flu or maybe pneumonia", {"influenza", "pneumonia"}),
        ("a UTI", {"urinary tract infection"}),
        ("nothing serious", set()),
        ("influenzas", set()),  # whole words only
    ],
)
def test_named_conditions(text, named):
    assert named_conditions(text, condition_aliases()) == named


# -- the environment ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["consult_env", "consult_single_agent"])
def test_the_expert_succeeds_on_300_seeds(name):
    env = pettingllms.make(name)
    assert all(play(env, seed, expert)[1]["success"] for seed in SEEDS)


def diagnose_at_once(guess):
    """A doctor who asks nothing and names a condition of the complaint's group, chosen by `guess`."""

    def reply(env):
        if env.agent_selection == "patient":
            return env.expert_reply()
        group = [c for c in CONDITIONS if c.name == env.case.diagnosis][0].group
        candidates = [c.name for c in CONDITIONS if c.group == group]
        return f"Diagnosis: {guess(candidates, env)}\nAdvice: rest, fluids and come back if worse."

    return reply


@pytest.mark.slow
def test_diagnosing_without_a_question_rarely_succeeds():
    env = pettingllms.make("consult_env")
    strategies = {
        "first of the group": lambda names, env: names[0],
        "last of the group": lambda names, env: names[-1],
        "random in the group": lambda names, env: names[int(env.np_random.integers(len(names)))],
    }
    for strategy, guess in strategies.items():
        successes = sum(play(env, seed, diagnose_at_once(guess))[1]["success"] for seed in SEEDS)
        assert successes / len(SEEDS) < 0.30, strategy


def test_the_final_reply_carries_the_rule_reward_and_its_parts():
    env = pettingllms.make("consult_env")
    trace, info = play(env, 5, expert)
    parts = info["details"]["reward_parts"]
    assert parts["diagnosis"] == REWARD_WEIGHTS["diagnosis"] and parts["advice"] == REWARD_WEIGHTS["advice"]
    assert parts["format"] == REWARD_WEIGHTS["format"]
    assert parts["questions"] == pytest.approx(REWARD_WEIGHTS["per_question"] * info["details"]["questions_asked"])
    assert trace[-1][1] == pytest.approx(sum(parts.values()))
    assert info["details"]["diagnosis_correct"] is True and info["agent_success"]["doctor"] is True


@pytest.mark.parametrize(
    "reply, correct, advice, format_ok",
    [
        ("Diagnosis: {truth}\nAdvice: rest and drink plenty of fluids", True, True, True),
        ("Diagnosis: {truth}", True, False, False),
        ("Diagnosis: {truth}\nAdvice: rest", True, False, True),
        ("Diagnosis: {truth} or {other}\nAdvice: rest and drink plenty", False, True, False),
        ("Diagnosis: {other}\nAdvice: rest and drink plenty of fluids", False, True, True),
    ],
)
def test_reward_parts(reply, correct, advice, format_ok):
    env = pettingllms.make("consult_single_agent")
    env.reset(seed=2)
    other = next(c.name for c in CONDITIONS if c.name != env.case.diagnosis)
    _, reward, terminated, _, info = env.step(reply.format(truth=env.case.diagnosis, other=other))
    details = info["details"]
    assert terminated and info["success"] is correct
    assert (details["diagnosis_correct"], details["advice_present"], details["format_ok"]) == (
        correct,
        advice,
        format_ok,
    )
    assert reward == pytest.approx(sum(details["reward_parts"].values()))


def test_replies_without_their_line_are_invalid_and_say_why():
    env = pettingllms.make("consult_env")
    env.reset(seed=0)
    info = env.step("Tell me more.")[4]
    assert info["valid"] is False and info["parse_error"] == "no 'Question:' or 'Diagnosis:' line"
    info = env.step("I have a fever.")[4]  # the patient, without its Answer: line
    assert info["valid"] is False and info["parse_error"] == "no 'Answer:' line in the reply"
    obs = env.step("Question: Do you have a fever?")[0]
    assert "Do you have a fever?" in obs[-1]["content"], "the patient sees the question"
    assert env.case.diagnosis not in obs[0]["content"], "the patient's record never names the condition"


def test_a_huge_reply_of_blank_lines_is_parsed_in_linear_time():
    started = time.perf_counter()
    assert reply_lines(" \n" * 300_000 + "Question: Any fever?") == {"question": "Any fever?"}
    assert time.perf_counter() - started < 5  # a prefix that crossed newlines made this quadratic: hours


def test_any_policy_can_play_the_patient_and_the_patient_is_not_trainable_by_default():
    assert ConsultEnv.non_trainable_agents == ("patient",)
    env = pettingllms.make("consult_env")
    env.reset(seed=1)
    env.step("Question: Do you have a fever?")
    info = env.step("Answer: Not that I noticed, doctor.")[4]
    assert info["valid"] is True and info["details"] == {"answer": "Not that I noticed, doctor."}
    assert "Patient: Not that I noticed, doctor." in env.observe("doctor")[-1]["content"]
    config = load_config(["env.name=consult_env", "policy=hf"])
    assert config.agents["patient"].policy == "simulator"
    assert not config.trains("patient", ConsultEnv.non_trainable_agents) and config.trains("doctor", ("patient",))
    assert config.policies["simulator"].backend == "expert"


def test_the_single_agent_doctor_hears_the_simulated_patient():
    env = pettingllms.make("consult_single_agent")
    env.reset(seed=3)
    obs, _, _, _, info = env.step("Question: How long has this been going on?")
    assert info["details"]["patient_answer"] == env.case.findings["duration"]
    assert f"Patient: {env.case.findings['duration']}" in obs[-1]["content"]


# -- case files ---------------------------------------------------------------------------

CASES = [
    {
        "id": "whooping-1",
        "complaint": "I keep coughing in fits.",
        "diagnosis": "pertussis",
        "aliases": ["whooping cough"],
        "findings": {
            "cough": "In long fits that end with a whooping breath.",
            "duration": "Three weeks now.",
            "nausea": "Sometimes I vomit after a fit.",
        },
        "advice": "See a doctor for a swab and antibiotics, and keep away from babies.",
    },
    {"complaint": "My ankle hurts.", "diagnosis": "sprained ankle", "findings": {"pain_site": "The outer ankle."}},
]


def test_a_case_file(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CASES))
    env = pettingllms.make("consult_env", dataset=str(path))
    trace, info = play(env, 0, expert)
    assert info["success"] is True and env.task_id == "whooping-1"
    asked = [step[4]["details"].get("topic") for step in trace[1:] if "question" in step[4]["details"]]
    assert asked == ["cough", "duration", "nausea"]
    env.reset(seed=0, options={"task_index": 0})
    assert env.step("Diagnosis: whooping cough\nAdvice: rest and see your doctor")[4]["success"] is True
    _, info = play(env, 1, lambda e: e.expert_reply(wrong=True))
    assert info["success"] is False and env.task_id == "cases/1"
    assert env.has_test_split is False and pettingllms.make("consult_env").has_test_split is True


def test_a_case_with_an_unknown_topic_is_a_data_error(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"complaint": "x", "diagnosis": "y", "findings": {"mood": "low"}}) + "\n")
    with pytest.raises(DataError, match=r"row 0: unknown finding topic\(s\) mood; topics are duration, fever"):
        pettingllms.make("consult_env", dataset=str(path))


# -- a real collection --------------------------------------------------------------------


@pytest.mark.slow
def test_collect_writes_the_rule_reward_parts_into_the_rollouts(tmp_path):
    config = load_config(
        [
            "env.name=consult_env",
            "policy=expert",
            "policy.error_rate=0.5",
            "training.sft_num_episodes=6",
            f"training.sft_data_dir={tmp_path}",
            "training.run_name=consult",
        ]
    )
    result = collect(config)
    episodes = [json.loads(line) for line in result.files.rollouts.read_text().splitlines()]
    assert len(episodes) == 6
    for episode in episodes:
        final = episode["turns"][-1]
        assert final["agent"] == "doctor"
        parts = final["details"]["reward_parts"]
        assert set(parts) == {"diagnosis", "advice", "format", "questions"}
        assert final["reward"] == pytest.approx(sum(parts.values()))
        assert episode["success"] is final["details"]["diagnosis_correct"]
        assert all(not turn["trainable"] for turn in episode["turns"] if turn["agent"] == "patient")
    records = [json.loads(line) for line in result.files.records.read_text().splitlines()]
    assert records and all(record["metadata"]["agent_name"] == "doctor" for record in records)


def test_the_simulated_patient_is_not_trained_unless_asked(tmp_path):
    from pettingllms.collect import collect
    from pettingllms.config import load_config

    base = ["env.name=consult_env", "policy=expert", "agents.patient.policy=null", f"training.sft_data_dir={tmp_path}"]
    result = collect(load_config([*base, "training.run_name=default", "training.sft_num_episodes=3"]))
    assert result.stats["per_agent"]["patient"]["kept"] == 0 and result.stats["per_agent"]["doctor"]["kept"] > 0
    asked = collect(
        load_config([*base, "training.run_name=asked", "training.sft_num_episodes=3", "agents.patient.trainable=true"])
    )
    assert asked.stats["per_agent"]["patient"]["kept"] > 0
