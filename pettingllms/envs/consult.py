"""The consultation environment: a doctor asks a patient questions, then states a diagnosis and advice."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pettingllms.envs.base import Message, TurnBasedTextEnv, TurnResult
from pettingllms.envs.code_tasks import cached_load, read_rows
from pettingllms.envs.consult_cases import (
    CONDITIONS,
    TOPICS,
    Case,
    case_from_row,
    condition_aliases,
    distinguishing_topics,
    generate_case,
    match_topic,
    named_conditions,
    patient_answer,
)
from pettingllms.exceptions import DataError

REWARD_WEIGHTS = {"diagnosis": 1.0, "advice": 0.2, "format": 0.1, "per_question": -0.02}
"""The rule reward of the doctor's final reply: a correct diagnosis, advice given, the format kept,
and a small cost per question asked (so that asking everything is not free)."""
_LINE = re.compile(r"^[ \t*_#>`]*(question|diagnosis|advice|answer)[ \t*_`]*:(.*)$", re.IGNORECASE | re.MULTILINE)
"""A labelled line; the prefix never crosses a newline, so a reply of a million newlines costs linear time."""


def reply_lines(text: str) -> dict[str, str]:
    """The last `Question:` / `Diagnosis:` / `Advice:` / `Answer:` line of a reply, by lowercase label."""
    return {match[1].lower(): match[2].strip().strip("*`_ ").strip()[:500] for match in _LINE.finditer(text)}


def load_cases(path: str) -> list[Case]:
    """The cases of a JSONL/Parquet file (see `consult_cases.case_from_row` for a row's keys)."""
    return cached_load(path, _read_cases)


def _read_cases(path: str) -> list[Case]:
    rows, _ = read_rows(path)
    stem = Path(path).name.split(".")[0]
    cases = []
    for number, row in enumerate(rows):
        try:
            case = case_from_row(row, f"Case file {path}, row {number}")
        except ValueError as error:
            raise DataError(str(error)) from None
        cases.append(replace(case, case_id=case.case_id or f"{stem}/{number}"))
    return cases


class ConsultEnv(TurnBasedTextEnv):
    """
    A medical consultation: the doctor asks questions until it can name the patient's condition.

    ## Description
    A patient arrives with a complaint ("I've got a bad headache."). By default the case is
    drawn from a table of 18 conditions in 4 groups that share a complaint (cough, headache,
    stomach pain, sore throat), so the complaint leaves 4 or 5 candidates and only the right
    questions tell them apart (`consult_cases.py`; a teaching simulator, not medical advice).
    Your own cases come from a JSONL file (`dataset`).

    ## Agents
    `doctor`, then `patient`, once each per round.
    - `doctor` (trainable) asks one question per turn, or ends with a diagnosis and advice.
    - `patient` answers from the hidden case record, only what was asked. Its expert is the
      rule-based simulator (the question's first recognised topic, answered from the record;
      anything not in the record is denied). `configs/env/consult_env.yaml` has it played by
      that simulator (policy `simulator`, backend expert) and not trainable, whatever plays
      the doctor; `agents.patient.policy=<name>` lets any policy play it from the record in
      its prompt. `non_trainable_agents = ("patient",)` says the same to code.

    ## Observation
    `[system, user]`. The doctor: the reply format and the conditions the diagnosis is one
    of; then the patient's age, sex and complaint, the consultation so far and the rounds
    left. The patient: its record and how to answer; then the consultation and the question.

    ## Action format
    - `doctor`: a `Question: <one question>` line, or `Diagnosis: <condition>` and
      `Advice: <what to do>` lines (a reply with a `Diagnosis:` line is final).
    - `patient`: an `Answer: <reply>` line.
    A reply without its line, or with an empty one, is an invalid action.

    ## Success and rewards
    Success: the diagnosis names the case's condition (by any alias) and no other one. The
    doctor's final reply earns the rule reward, each part in `details["reward_parts"]`:
    1.0 for the right diagnosis, 0.2 for advice (an `Advice:` line of 3+ words), 0.1 for the
    format (advice given, one condition named, no question in the same reply), minus 0.02
    per question asked. Questions and the patient's answers earn 0.

    ## Episode end
    Terminated by the doctor's diagnosis; truncated after `max_turns` rounds without one.

    ## Arguments
    ```python
    pettingllms.make("consult_env", max_turns=6, dataset="generated", shuffle=False)
    ```
    `dataset`: "generated" or a JSONL/Parquet file of cases, one per row: `complaint`,
    `diagnosis`, `findings` ({topic: what the patient says}, topics as in
    `consult_cases.TOPICS`), and optional `aliases`, `advice`, `age`, `sex`, `id`; row
    i mod N plays for `task_index` i. `shuffle` walks the file in a seeded order.

    ## Version history
    * v0: initial version.
    """

    possible_agents = ("doctor", "patient")
    non_trainable_agents: tuple[str, ...] = ("patient",)
    """Agents whose turns are not training data by default (the simulated patient)."""
    default_max_turns = 6
    task_source = "seeded cases of 18 conditions, or your JSONL cases"

    @property
    def has_test_split(self) -> bool:
        return self.cases is None  # generated cases come from disjoint test seeds; a case file is one split

    def __init__(
        self,
        max_turns: int | None = None,
        render_mode: str | None = None,
        dataset: str = "generated",
        shuffle: bool = False,
    ):
        super().__init__(max_turns=max_turns, render_mode=render_mode)
        self.cases = None if dataset == "generated" else load_cases(dataset)
        self.aliases = condition_aliases()
        for case in self.cases or ():
            self.aliases[case.diagnosis] = tuple(dict.fromkeys((*self.aliases.get(case.diagnosis, ()), *case.aliases)))
        self.order = np.random.default_rng(0).permutation(len(self.cases)) if shuffle and self.cases else None

    # -- the task -------------------------------------------------------------------------

    def _reset_task(self, options: dict[str, Any]) -> None:
        if self.cases is None:
            self.case = generate_case(self.np_random)
            digest = hashlib.sha1(repr(self.case).encode()).hexdigest()[:10]
            self.task_id = f"consult-{self.seed if self.seed is not None else 'h' + digest}"
        else:
            index = options.get("task_index")
            index = int(self.np_random.integers(len(self.cases))) if index is None else int(index) % len(self.cases)
            self.case = self.cases[int(self.order[index]) if self.order is not None else index]
            self.task_id = self.case.case_id
        self.plan = distinguishing_topics(self.case)
        self.dialogue: list[tuple[str, str]] = []
        self.questions = 0
        self.pending_question: str | None = None
        self.diagnosis_correct = False

    # -- replies --------------------------------------------------------------------------

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        lines = reply_lines(text)
        if agent == "patient":
            return self._patient_reply(lines)
        if "diagnosis" in lines:
            if not lines["diagnosis"]:
                return TurnResult(valid=False, parse_error="the 'Diagnosis:' line is empty", agent_success=False)
            return self._diagnose(lines)
        if not lines.get("question"):
            why = "the 'Question:' line is empty" if "question" in lines else "no 'Question:' or 'Diagnosis:' line"
            return TurnResult(valid=False, parse_error=why, agent_success=False)
        question = lines["question"]
        self.questions += 1
        self.dialogue.append(("Doctor", question))
        self.pending_question = question
        details = {"question": question, "topic": match_topic(question), "questions_asked": self.questions}
        return TurnResult(details=details)

    def _patient_reply(self, lines: dict[str, str]) -> TurnResult:
        if not lines.get("answer"):
            why = "the 'Answer:' line is empty" if "answer" in lines else "no 'Answer:' line in the reply"
            return TurnResult(valid=False, parse_error=why)
        self.dialogue.append(("Patient", lines["answer"]))
        self.pending_question = None
        return TurnResult(details={"answer": lines["answer"]})

    def _diagnose(self, lines: dict[str, str]) -> TurnResult:
        named = named_conditions(lines["diagnosis"], self.aliases)
        advice = lines.get("advice", "")
        self.diagnosis_correct = named == {self.case.diagnosis}
        advice_present = len(advice.split()) >= 3
        format_ok = "advice" in lines and len(named) == 1 and "question" not in lines
        parts = {
            "diagnosis": REWARD_WEIGHTS["diagnosis"] * self.diagnosis_correct,
            "advice": REWARD_WEIGHTS["advice"] * advice_present,
            "format": REWARD_WEIGHTS["format"] * format_ok,
            "questions": round(REWARD_WEIGHTS["per_question"] * self.questions, 4),
        }
        details = {
            "diagnosis": lines["diagnosis"],
            "named_conditions": sorted(named),
            "diagnosis_correct": self.diagnosis_correct,
            "advice_present": advice_present,
            "format_ok": format_ok,
            "questions_asked": self.questions,
            "reward_parts": parts,
        }
        reward = round(sum(parts.values()), 4)
        return TurnResult(reward=reward, done=True, agent_success=self.diagnosis_correct, details=details)

    def _episode_success(self) -> bool:
        return self.diagnosis_correct

    # -- prompts --------------------------------------------------------------------------

    def _prompt(self, agent: str) -> list[Message]:
        if agent == "patient":
            return self._patient_prompt()
        names = sorted(self.aliases)
        system = (
            "You are a doctor in a consultation. Find out what the patient has by asking questions, one at a "
            "time, each as a line `Question: <your question>`. When you are confident, reply with two lines: "
            "`Diagnosis: <the condition>` and `Advice: <what the patient should do>`. Each question costs a "
            f"little; only a correct diagnosis earns the reward. The diagnosis is one of: {', '.join(names)}."
        )
        left = self.max_turns - self.round_idx
        closing = (
            "This is your last turn: give your diagnosis and advice now."
            if left == 1
            else f"Ask your next question, or give your diagnosis ({left} turns left, the last one for the diagnosis)."
        )
        user = f"{self._introduction()}\n\n## Consultation so far\n{self._dialogue_text()}\n\n{closing}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _patient_prompt(self) -> list[Message]:
        record = "\n".join(f"- {topic}: {answer}" for topic, answer in self.case.findings.items())
        system = (
            f"You are a patient at a doctor's consultation: a {self.case.age}-year-old {self.case.sex} who came "
            f'in saying "{self.case.complaint}" Answer only the doctor\'s latest question, briefly and truthfully '
            "from your record below, in one line: `Answer: <your reply>`. Never volunteer other symptoms and never "
            "name an illness; anything the record does not mention, you do not have.\n\n"
            f"## Your record\n{record}"
        )
        question = self.pending_question or "(the doctor asked nothing you could answer)"
        user = f"## Consultation so far\n{self._dialogue_text()}\n\nThe doctor's question: {question}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _introduction(self) -> str:
        return f'A {self.case.age}-year-old {self.case.sex} comes in and says: "{self.case.complaint}"'

    def _dialogue_text(self) -> str:
        return "\n".join(f"{speaker}: {text}" for speaker, text in self.dialogue) or "(nothing yet)"

    def render(self) -> str:
        return f"{self._introduction()}\n{self._dialogue_text()}"

    # -- the expert -----------------------------------------------------------------------

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        """The doctor asks `self.plan`'s questions, then diagnoses (wrong: names the other condition of the
        group that fits the answers best). The patient is the rule-based simulator, truthful even when
        `wrong`, so a wrong episode fails through the doctor alone."""
        if agent == "patient":
            if self.pending_question is None:
                return "Answer: Sorry, what would you like to know?"
            return f"Answer: {patient_answer(self.case, self.pending_question)}"
        last_turn = self.round_idx == self.max_turns - 1
        if self.questions < len(self.plan) and not last_turn:
            return f"Question: {TOPICS[self.plan[self.questions]].question}"
        if wrong:
            name = self._wrong_diagnosis()
            advice = next((c.advice for c in CONDITIONS if c.name == name), self.case.advice)
            return f"Diagnosis: {name}\nAdvice: {advice}"
        return f"Diagnosis: {self.case.diagnosis}\nAdvice: {self.case.advice}"

    def _wrong_diagnosis(self) -> str:
        others = [name for name in self.case.candidates or sorted(self.aliases) if name != self.case.diagnosis]
        findings = {c.name: {t: f.label for t, f in c.findings.items()} for c in CONDITIONS}

        def shared(name: str) -> int:
            own, truth = findings.get(name, {}), findings.get(self.case.diagnosis, {})
            return sum(own.get(topic, "no") == truth.get(topic, "no") for topic in self.plan)

        return max(others, key=shared)


class ConsultSingleAgentEnv(ConsultEnv):
    """
    `ConsultEnv` with the doctor alone: the rule-based patient answers inside the environment.

    ## Agents
    `doctor`.

    ## Observation
    As the doctor's in `ConsultEnv`: each question's answer, from the rule-based patient,
    is in the consultation of the next observation.

    ## Success and rewards / Episode end
    As `ConsultEnv`; `max_turns` counts the doctor's replies (default 6).

    ## Arguments / Version history
    As `ConsultEnv`. v0: initial version.
    """

    possible_agents = ("doctor",)
    non_trainable_agents = ()

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        result = super()._apply_reply(agent, text)
        if self.pending_question is not None:
            answer = patient_answer(self.case, self.pending_question)
            self.dialogue.append(("Patient", answer))
            self.pending_question = None
            result.details["patient_answer"] = answer
        return result
