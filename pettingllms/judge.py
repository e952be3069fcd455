"""Judged rewards: a judge policy scores the turns collection could keep, in [0, 1].

    >>> judge = start_judge(config.reward, "sokoban")  # None without reward.judge; a judge server that is down
    >>> episode = await judge(episode)                 # stops here; this adds turn["judge"], turn["combined_reward"]

Which turns: those the filter could keep, the trainable turns of an episode without an error
(and, with `training.only_success`, of a successful episode or agent): judging the others would
pay for scores nobody reads. With `reward.unit=turn` each such turn is one call; with
`reward.unit=episode` one call scores the episode, and every such turn gets that score.

The prompt is the rubric (`reward.rubric`, `reward.rubric_file`, else `built_in_rubric`: the
env's `CRITERIA` in a frame that asks for a final `Score:` line) with its `{field}`s filled in:

    {task}        the first user message of the episode (the problem as the first agent saw it)
    {agent}       the agent that replied (episode unit: the judged agents, comma-separated)
    {prompt}      the messages the agent saw, as "[role]\\ncontent" blocks (episode unit: the first turn's)
    {response}    the agent's reply (episode unit: the last judged turn's)
    {transcript}  every reply of the episode, in order, as "[turn i: agent]\\nreply" blocks
    {success}     "yes" or "no": whether the environment judged the episode successful
    {reward}      the env's reward of the turn (episode unit: the sum over the episode's turns)

Other braces are left as they are, so a rubric may show JSON.

The score (`parse_score`): the last "Score: X" in the reply (after any `</think>`), else the last
JSON `"score": X`, else the last fraction "X/10" or "X out of 10", else a reply that is only a
number. "X/Y" and "X%" are divided out; a number without a scale is read on 0-1 when at most 1,
on 0-10 when at most 10, on 0-100 when at most 100. No score, or one outside its scale, is a
judge error of kind `judge_unparsable`: never a crash, and never a guess. A server that fails
after the policy's retries gives the `PolicyError`'s kind (`connection`, `http_5xx`...).

combined reward = (rule * env reward + judge * score) / (rule + judge) with `reward.weights`;
with a judge weight above 0, a turn without a score has no combined reward (None), which
`training.min_reward` drops as `judge_error`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pettingllms.exceptions import ConfigError, InfrastructureError, UserError
from pettingllms.policies import GenerationRequest, Policy, SamplingParams, build_policy, sampling_for
from pettingllms.records import Episode, Judgement, Turn, turn_is_successful

if TYPE_CHECKING:
    from pettingllms.config.schema import RewardConfig

RUBRIC_FIELDS = ("task", "agent", "prompt", "response", "transcript", "success", "reward")
_FIELD = re.compile(r"\{(\w+)\}")

# ---------------------------------------------------------------- rubrics

_PLANNING = (
    "The tool agent writes a Python program that prints the answer; the planner states the answer on an "
    "'Actions:' line. A good reply is right for this puzzle, reasons or computes it soundly instead of guessing, "
    "and says no more than it needs."
)
_CODE = (
    "The code generator writes a Python solution; the test generator writes tests for the task. A good solution "
    "is correct on edge cases too and easy to read; good tests check what the task asks, not one implementation."
)
_MATH = (
    "The reasoning agent explains a solution; the tool agent writes a program that computes it. A good reply has "
    "every step right and justified, computes what the problem asks, and states the final answer clearly."
)
_SEARCH = (
    "The search agent looks up documents; the reasoning agent answers from what was found. A good query aims at "
    "the missing fact; a good answer is supported by the retrieved text, not guessed."
)
_CONSULT = (
    "The doctor questions the patient and then gives a diagnosis. Good questions are relevant and not repeated; "
    "a good diagnosis follows from the answers; the doctor is clear and courteous."
)
GENERIC_CRITERIA = "A good reply is correct, follows the required format, and helps the team finish the task."
CRITERIA: dict[str, str] = {
    "sokoban": _PLANNING,
    "plan_path": _PLANNING,
    "sudoku": _PLANNING,
    "code_env": _CODE,
    "code_single_agent": _CODE,
    "math_env": _MATH,
    "math_single_agent": _MATH,
    "search_env": _SEARCH,
    "search_single_agent": _SEARCH,
    "consult_env": _CONSULT,
    "consult_single_agent": _CONSULT,
}
"""What a good reply is, per registered env; other envs get GENERIC_CRITERIA."""
_ASK_FOR_SCORE = (
    "A reply that breaks the required format, contradicts itself or succeeds by luck scores low even when the "
    "episode succeeded. Think briefly, then end with one line of the form\nScore: 0.7\n"
    "with a number from 0 (worthless) to 1 (excellent)."
)
TURN_FRAME = (
    "You grade one reply of an AI agent in a task solved by a team of agents.\n\n"
    "# The task\n{task}\n\n# What the agent ({agent}) saw\n{prompt}\n\n# The agent's reply\n{response}\n\n"
    "# Outcome\nThe episode succeeded: {success}. The environment's reward for this reply: {reward}.\n\n"
    "# How to grade\n"
)
EPISODE_FRAME = (
    "You grade how well a team of AI agents worked on a task.\n\n"
    "# The task\n{task}\n\n# What the agents replied, in order\n{transcript}\n\n"
    "# Outcome\nThe episode succeeded: {success}. The environment's total reward: {reward}.\n\n"
    "# How to grade\n"
)


def built_in_rubric(env_name: str, unit: str) -> str:
    """The rubric used without `reward.rubric`: the env's criteria in the frame of `unit` ('turn' or 'episode')."""
    frame = EPISODE_FRAME if unit == "episode" else TURN_FRAME
    return f"{frame}{CRITERIA.get(env_name, GENERIC_CRITERIA)}\n{_ASK_FOR_SCORE}"


def check_rubric(template: str, key: str = "reward.rubric") -> None:
    """Raise ConfigError for a `{field}` the rubric cannot fill, or a rubric that shows the judge no reply."""
    unknown = sorted({name for name in _FIELD.findall(template) if name not in RUBRIC_FIELDS})
    if unknown:
        accepted = ", ".join(f"{{{name}}}" for name in RUBRIC_FIELDS)
        raise ConfigError(f"{key}: unknown field {{{unknown[0]}}}; a rubric may use {accepted}.")
    if not {"response", "transcript"} & set(_FIELD.findall(template)):
        raise ConfigError(f"{key} shows the judge no reply; use {{response}} or {{transcript}} in it.")


def load_rubric(reward: RewardConfig, env_name: str) -> str:
    """The rubric template the settings name: `reward.rubric`, the file `reward.rubric_file`, or the built-in one."""
    if reward.rubric is not None:
        return reward.rubric
    if reward.rubric_file is None:
        return built_in_rubric(env_name, reward.unit)
    try:
        template = Path(reward.rubric_file).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"reward.rubric_file={reward.rubric_file!r} cannot be read: {error}.") from None
    check_rubric(template, f"reward.rubric_file ({reward.rubric_file})")
    return template


def render_rubric(template: str, values: dict[str, str]) -> str:
    """`template` with each `{field}` of RUBRIC_FIELDS replaced by its value; other braces stay."""
    return _FIELD.sub(lambda match: values.get(match[1], match[0]), template)


def turn_values(episode: Episode, turn: Turn) -> dict[str, str]:
    """The rubric's fields for one turn."""
    return {
        **_episode_values(episode),
        "agent": turn["agent"],
        "prompt": _render_messages(turn["messages"]),
        "response": turn["response"],
        "reward": f"{turn['reward']:g}",
    }


def episode_values(episode: Episode, judged: list[Turn]) -> dict[str, str]:
    """The rubric's fields for a whole episode, `judged` being the turns its score goes to."""
    return {
        **_episode_values(episode),
        "agent": ", ".join(dict.fromkeys(turn["agent"] for turn in judged)),
        "prompt": _render_messages(episode["turns"][0]["messages"]),
        "response": judged[-1]["response"],
        "reward": f"{sum(turn['reward'] for turn in episode['turns']):g}",
    }


def _episode_values(episode: Episode) -> dict[str, str]:
    first = episode["turns"][0]["messages"] if episode["turns"] else []
    transcript = "\n\n".join(
        f"[turn {turn['turn_idx']}: {turn['agent']}]\n{turn['response']}" for turn in episode["turns"]
    )
    return {
        "task": next((message["content"] for message in first if message["role"] == "user"), ""),
        "transcript": transcript,
        "success": "yes" if episode["success"] else "no",
    }


def _render_messages(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"[{message['role']}]\n{message['content']}" for message in messages)


# ---------------------------------------------------------------- scores

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_SCALE = rf"(?:\s*(?:/|\bout\s+of\b)\s*({_NUMBER}))?\s*(%)?"
SCORE_PATTERNS = (
    re.compile(rf"\bscore\b[^\w\n]{{0,4}}(?:[:=]|\bis\b|\bof\b)[\s*_`]*({_NUMBER}){_SCALE}", re.IGNORECASE),
    re.compile(rf"\"score\"\s*:\s*\"?({_NUMBER}){_SCALE}", re.IGNORECASE),
    re.compile(rf"(?<![\w.])({_NUMBER})\s*(?:/|\bout\s+of\b)\s*({_NUMBER})()", re.IGNORECASE),
    re.compile(rf"^[\s*_`]*({_NUMBER})()\s*(%)?[\s*_`.]*$"),
)
"""Where a score is looked for, in order: a 'Score:' line, JSON, a fraction, a reply that is only a number.
Each has the groups (value, denominator or empty, '%' or empty); the last match of the first pattern that
matches is the score."""


def parse_score(text: str) -> tuple[float | None, str | None]:
    """(score in [0, 1], None), or (None, why no score could be read) for the judge's reply `text`; never raises."""
    answer = text.rsplit("</think>", 1)[-1]  # a reasoning model's thoughts may quote other scores
    for pattern in SCORE_PATTERNS:
        matches = list(pattern.finditer(answer))
        if matches:
            value, denominator, percent = matches[-1].groups()
            score = _on_unit_scale(float(value), float(denominator) if denominator else None, bool(percent))
            if score is None:
                return None, f"the judge's score {matches[-1][0].strip()!r} is outside its scale"
            return score, None
    return None, "the judge's reply has no score (expected a last line such as 'Score: 0.7')"


def _on_unit_scale(value: float, denominator: float | None, percent: bool) -> float | None:
    if denominator is not None:
        return value / denominator + 0.0 if 0 < denominator and 0 <= value <= denominator else None
    limit = 100.0 if percent else next((limit for limit in (1.0, 10.0, 100.0) if value <= limit), None)
    return value / limit + 0.0 if limit is not None and 0 <= value <= limit else None


def combine_reward(env_reward: float, score: float | None, weights: dict[str, float]) -> float | None:
    """(rule * env reward + judge * score) / (rule + judge); None when the score counts (judge > 0) but is missing."""
    rule, judge = weights.get("rule", 0.0), weights.get("judge", 0.0)
    if judge == 0:
        return env_reward
    if score is None:
        return None
    return (rule * env_reward + judge * score) / (rule + judge)


def reweigh_episode(episode: Episode, weights: dict[str, float]) -> Episode:
    """Recompute the combined reward of `episode`'s turns with other `weights`, in place, without a judge call.

    A turn the judge never saw gets a combined reward too when the judge's weight counts: None, so that
    `min_reward` drops it as `judge_error` instead of reading its env reward as if it were combined.
    """
    for turn in episode["turns"]:
        score = turn["judge"]["score"] if "judge" in turn else None
        turn["combined_reward"] = combine_reward(turn["reward"], score, weights)
    return episode


def is_candidate(episode: Episode, turn: Turn, only_success: bool, collect_mode: str) -> bool:
    """Whether the filter could keep `turn`, so that it is worth judging."""
    if episode.get("error") or not turn["trainable"]:
        return False
    return not only_success or turn_is_successful(episode, turn, collect_mode)


# ---------------------------------------------------------------- the judge


class Judge:
    """Scores the turns of finished episodes with a judge policy; `await judge(episode)` judges one in place.

    Calls of one episode run together; `concurrency` bounds the calls in flight over all episodes.
    It never raises for a judge's bad reply or a server that fails after its retries: the turn's
    `judge.error` says what happened, and the episode is kept like any other.
    """

    def __init__(
        self,
        policy: Policy,
        rubric: str,
        sampling: SamplingParams,
        *,
        unit: str = "turn",
        weights: dict[str, float] | None = None,
        concurrency: int = 16,
        only_success: bool = True,
        collect_mode: str = "env",
    ):
        self.policy, self.rubric, self.sampling = policy, rubric, sampling
        self.unit, self.concurrency = unit, concurrency
        self.weights = dict(weights or {"rule": 1.0, "judge": 0.0})
        self.only_success, self.collect_mode = only_success, collect_mode
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @classmethod
    def from_settings(
        cls, reward: RewardConfig, env_name: str, only_success: bool = True, collect_mode: str = "env", seed: int = 0
    ) -> Judge:
        """The judge `reward` (with its `judge` set) describes, judging the turns a filter with `only_success`
        and `collect_mode` could keep."""
        policy = build_policy(reward.judge.name, reward.judge, seed=seed)
        return cls(
            policy,
            load_rubric(reward, env_name),
            sampling_for(reward.judge, None),
            unit=reward.unit,
            weights=reward.weights,
            concurrency=reward.concurrency,
            only_success=only_success,
            collect_mode=collect_mode,
        )

    async def __call__(self, episode: Episode) -> Episode:
        """Judge `episode`'s candidate turns (replacing any earlier verdict) and return it."""
        judged = [
            turn for turn in episode["turns"] if is_candidate(episode, turn, self.only_success, self.collect_mode)
        ]
        for turn in episode["turns"]:
            turn.pop("judge", None)
            turn.pop("combined_reward", None)
        if not judged:
            return episode
        if self.unit == "episode":
            verdict = await self.ask(episode_values(episode, judged), "episode", episode["episode_id"])
            verdicts = [verdict] * len(judged)
        else:
            asks = (self.ask(turn_values(episode, turn), "turn", episode["episode_id"]) for turn in judged)
            verdicts = await asyncio.gather(*asks)
        for turn, verdict in zip(judged, verdicts, strict=True):
            turn["judge"] = dict(verdict)
            turn["combined_reward"] = combine_reward(turn["reward"], verdict["score"], self.weights)
        return episode

    async def ask(self, values: dict[str, str], unit: str, episode_id: str = "") -> Judgement:
        """One judge call on the rubric filled with `values`: the verdict, an error verdict if it failed."""
        messages = [{"role": "user", "content": render_rubric(self.rubric, values)}]
        request = GenerationRequest(messages, self.sampling, agent="judge", episode_id=episode_id)
        try:
            async with self._semaphore():
                generation = await self.policy.generate(request)
        except InfrastructureError as error:
            return {"score": None, "text": "", "error": {"kind": error.kind, "message": str(error)}, "unit": unit}
        except UserError:
            raise  # a setting to fix (the judge's model name...): say it, do not count it
        except Exception as error:  # a bug in a backend must not cost the episode its ledger line
            message = f"{type(error).__name__}: {error}"
            return {"score": None, "text": "", "error": {"kind": "policy_error", "message": message}, "unit": unit}
        score, problem = parse_score(generation.text)
        error = None if problem is None else {"kind": "judge_unparsable", "message": problem}
        return {"score": score, "text": generation.text, "error": error, "unit": unit}

    def _semaphore(self) -> asyncio.Semaphore:
        """The bound on calls in flight, made for the running event loop (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.concurrency))
        return self._slots[1]

    async def probe(self) -> None:
        """Ask the judge for one token, so that a server that is down or a wrong model name stops the run
        before anything is written (PolicyError, after the policy's retries)."""
        messages = [{"role": "user", "content": "Say: Score: 1"}]
        request = GenerationRequest(messages, SamplingParams(temperature=0.0, max_tokens=1))
        try:
            await self.policy.generate(request)
        finally:
            await self.policy.close()  # its connections belong to this probe's event loop

    async def close(self) -> None:
        """Release the judge policy's connections (or its model)."""
        await self.policy.close()


def start_judge(
    reward: RewardConfig, env_name: str, *, only_success: bool = True, collect_mode: str = "env", seed: int = 0
) -> Judge | None:
    """The judge of `reward` (see `Judge.from_settings`), or None without `reward.judge`; a server judge is asked
    once first, and one that does not answer is a one-line UserError, before the caller writes anything."""
    if reward.judge is None:
        return None
    judge = Judge.from_settings(reward, env_name, only_success, collect_mode, seed)
    if reward.judge.backend != "openai":
        return judge  # a local model has loaded by now: nothing to reach
    try:
        asyncio.run(judge.probe())
    except InfrastructureError as error:
        raise UserError(
            f"The judge (reward.judge) did not answer: {error}. Start its server or fix reward.judge.base_url / "
            "reward.judge.model; nothing was written."
        ) from None
    return judge


async def judge_all(judge: Judge, episodes: list[Episode], progress: Any = None) -> list[Episode]:
    """Judge `episodes` in place, `judge.concurrency` episodes at a time, keeping their order; `progress`
    (a `console.Progress`) counts the episodes done."""
    queue: Iterator[Episode] = iter(episodes)

    async def work() -> None:
        for episode in queue:
            await judge(episode)
            if progress is not None:
                progress.update(1)

    await asyncio.gather(*(work() for _ in range(min(judge.concurrency, len(episodes)) or 1)))
    return episodes
