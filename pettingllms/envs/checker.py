"""A checker that exercises any registered environment, like PettingZoo's `api_test`.

    from pettingllms.envs.checker import check_env
    check_env("sokoban")            # raises AssertionError saying what broke

It checks the API (agents, observations, infos), determinism under a seed, that model
garbage is an invalid action that says why (and never an exception), that the expert's
replies are valid, that episodes end within their turn budget, and that the expert solves
seeds (and its wrong play does not). The test-suite runs it over every registered id, so a
new environment is tested the moment it is registered.
"""

from __future__ import annotations

from typing import Any

from pettingllms.envs import make

NEVER_VALID_REPLIES = (
    "",
    "   \n\t ",
    "I don't know.",
    "```python\n",  # a fence opened and never closed
    "```python\n```",  # an empty program
    "\\boxed{",  # an answer begun and never finished
    "\\boxed{}",  # an empty answer
    "Actions: [",  # a plan begun and never finished
    "Actions: []",  # an empty plan
    "<answer></answer>",
    "\x00\x01\x02 \ud800",  # control characters and a lone surrogate
    "a" * 50_000,
    "```\n" * 500,  # fences with no language and nothing in them
)
"""Replies that are no action in any environment: no answer in any format, or one begun and
never finished, or an empty one. Every env must call them invalid (`valid=False`) and say why
(a non-empty `parse_error`); an env that accepts one would put garbage in the training data."""

MUST_NOT_CRASH_REPLIES = (
    "```python\nwhile True: pass\n```",
    "```python\nraise SystemExit(3)\n```",
)
"""Replies that are garbage for most agents but a well-formed action for some: to an agent that
writes programs, a fenced program that loops forever or exits with an error is a valid reply
(it parses, then times out or fails when run). An env may accept or refuse them, but must
neither raise nor leave `valid` and `parse_error` disagreeing."""

HOSTILE_REPLIES = NEVER_VALID_REPLIES + MUST_NOT_CRASH_REPLIES


def check_env(name: str, expert_seeds: range = range(5), **kwargs: Any) -> None:
    """Run every check on env `name` (built with `kwargs`)."""
    env = make(name, **kwargs)
    check_api(env)
    check_determinism(env)
    check_invalid_replies(env)
    check_turn_budget(env)
    if env.has_expert:
        check_expert(env, expert_seeds)


def check_api(env) -> None:
    agents = env.possible_agents
    assert isinstance(agents, tuple) and agents and all(isinstance(a, str) for a in agents), agents
    obs, info = env.reset(seed=0)
    check_messages(obs)
    assert info["agent"] == agents[0], f"first agent {info['agent']!r}, expected {agents[0]!r}"
    assert info["success"] is None, "success is decided at the end of the episode, not at reset"
    assert isinstance(info["task_id"], str) and info["task_id"], "reset must set a task_id"
    assert env.agent_selection == info["agent"]


def check_messages(obs: Any) -> None:
    assert isinstance(obs, list) and obs, f"observation must be a non-empty list of messages, got {obs!r:.80}"
    for message in obs:
        assert set(message) >= {"role", "content"}, message
        assert message["role"] in ("system", "user", "assistant"), message["role"]
        assert isinstance(message["content"], str)
    assert obs[-1]["role"] == "user", "the last message must be the user turn the agent answers"


def play(env, seed: int, reply_for) -> tuple[list[Any], dict[str, Any]]:
    """One episode where `reply_for(env)` writes each reply; returns every step's output and the last info."""
    obs, info = env.reset(seed=seed, options={"task_index": seed})
    trace = [(obs, _comparable(info))]
    for _ in range(env.max_turns * len(env.possible_agents) + 1):
        agent, reply = env.agent_selection, reply_for(env)
        obs, reward, terminated, truncated, info = env.step(reply)
        check_verdict(info, agent, reply)
        trace.append((obs, reward, terminated, truncated, _comparable(info)))
        if terminated or truncated:
            return trace, info
    raise AssertionError(f"episode did not end within max_turns={env.max_turns} rounds")


def _comparable(info: dict[str, Any]) -> dict[str, Any]:
    """The info without timings, which differ between identical runs."""
    details = {k: v for k, v in info.get("details", {}).items() if not k.endswith("_s")}
    return {**info, "details": details}


def check_verdict(info: dict[str, Any], agent: str, reply: str) -> None:
    """A valid action has no parse_error; an invalid one says why."""
    error = info["parse_error"]
    if info["valid"] is True:
        assert error is None, f"{agent} accepted {reply!r:.60} but set parse_error={error!r}"
    else:
        assert info["valid"] is False, f"valid must be True or False, got {info['valid']!r}"
        assert isinstance(error, str) and error.strip(), f"{agent} refused {reply!r:.60} without saying why ({error!r})"


def check_determinism(env) -> None:
    reply = (lambda e: e.expert_reply()) if env.has_expert else (lambda e: "I don't know.")
    first, _ = play(env, 3, reply)
    second, _ = play(env, 3, reply)
    assert first == second, "the same seed and replies must give the same episode"


def check_invalid_replies(env, replies: tuple[str, ...] = HOSTILE_REPLIES) -> None:
    """Every agent answers each of `replies` on its first turn: never an exception, the garbage in
    NEVER_VALID_REPLIES is an invalid action, and every verdict is consistent (`check_verdict`)."""
    for agent in env.possible_agents:
        for text in replies:
            if not _reach_turn_of(env, agent):
                break
            obs, reward, terminated, truncated, info = env.step(text)
            assert isinstance(reward, float)
            if text in NEVER_VALID_REPLIES:
                assert info["valid"] is False, f"{agent} accepted {text!r:.60}: garbage must be an invalid action"
            check_verdict(info, agent, text)
            if not (terminated or truncated):
                check_messages(obs)


def _reach_turn_of(env, agent: str) -> bool:
    """Reset to seed 1 and let the agents before `agent` answer "I don't know." (cheap: no
    program runs); False if that ends the episode first."""
    env.reset(seed=1)
    while env.agent_selection != agent:
        _, _, terminated, truncated, _ = env.step("I don't know.")
        if terminated or truncated:
            return False
    return True


def check_turn_budget(env) -> None:
    trace, info = play(env, 2, lambda e: "I don't know.")
    assert info["success"] is False, "an episode of non-answers cannot succeed"
    assert trace[-1][3] or trace[-1][2], "the last step must be terminated or truncated"
    assert info["agent"] is None


def check_expert(env, seeds: range) -> None:
    for seed in seeds:
        trace, info = play(env, seed, lambda e: e.expert_reply())
        assert info["success"] is True, f"the expert failed seed {seed}"
        invalid = [step[4]["parse_error"] for step in trace[1:] if not step[4]["valid"]]
        assert not invalid, f"the expert's replies on seed {seed} were called invalid: {invalid}"
        _, info = play(env, seed, lambda e: e.expert_reply(wrong=True))
        assert info["success"] is False, f"the wrong expert solved seed {seed}"
