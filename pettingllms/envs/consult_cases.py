"""Cases for the consultation environment: a table of conditions, a seeded case generator, the rule-based
patient, the distinguishing questions, and the diagnosis check.

Pure functions over plain data; the environment lives in `consult.py`. This is a teaching
simulator with textbook-simple presentations, not medical knowledge to rely on.

- `CONDITIONS`: 18 conditions in 4 groups that share a presenting complaint (cough, headache,
  stomach pain, sore throat), so the complaint alone leaves 4 or 5 candidates and only the
  right questions tell them apart.
- `TOPICS`: what a doctor can ask about, each with the words that recognise a question about
  it, a question the expert asks, and the answer of a patient who does not have it.
- `generate_case(rng)`: a condition, an age, a sex, a duration and the opening complaint.
- `patient_answer(case, question)`: the rule-based patient answers the one topic the question
  asks about (the first one it names), from the case record, and nothing else.
- `distinguishing_topics(case)`: what the expert asks: topics chosen greedily until the
  answers rule out every other condition of the complaint group.
- `named_conditions(text, names)`: which conditions a diagnosis names (longest alias first).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class Topic(NamedTuple):
    keywords: tuple[str, ...]
    """Word starts that mark a question about the topic (`urin` matches urine and urinating)."""
    question: str
    """What the expert asks."""
    negative: str
    """What a patient without this finding answers."""


def _topic(keywords: str, question: str, negative: str) -> Topic:
    return Topic(tuple(keywords.split(", ")), question, negative)


TOPICS: dict[str, Topic] = {
    "duration": _topic("how long, when did, since when, start, began", "How long has this been going on?", "Recently."),
    "fever": _topic("fever, temperature, chill, feverish", "Have you had a fever or chills?", "No, no fever."),
    "cough": _topic("cough", "Do you have a cough?", "No, I'm not coughing."),
    "sputum": _topic("phlegm, sputum, mucus", "Are you bringing up any phlegm?", "No, nothing comes up."),
    "breathing": _topic("breath, wheez, short of", "Are you short of breath or wheezing?", "No, my breathing is fine."),
    "chest_pain": _topic("chest", "Do you have any chest pain?", "No chest pain."),
    "runny_nose": _topic("runny, nose, sneez, stuffy", "Do you have a runny or stuffy nose?", "No, my nose is fine."),
    "aches": _topic("ache, muscle, joint", "Do your muscles or joints ache?", "No, no aches."),
    "tiredness": _topic("tired, fatigue, energy, exhausted", "Do you feel unusually tired?", "Not more than usual."),
    "triggers": _topic("trigger, worse, better, exercise", "Does anything make it better or worse?", "Nothing really."),
    "history": _topic(
        "before, previous, history, happened", "Has this happened before?", "No, this is the first time."
    ),
    "pain_site": _topic("where, which side, point to, location", "Where exactly is the pain?", "Hard to say exactly."),
    "neck": _topic("neck, stiff", "Is your neck stiff?", "No, my neck is fine."),
    "light": _topic("light, bright, vision, zigzag", "Does light bother you, or do you see anything odd?", "No."),
    "nausea": _topic("nause, vomit, throw up, threw up", "Have you felt sick or vomited?", "No, no nausea."),
    "rash": _topic("rash, skin, spots", "Have you noticed any rash?", "No rash."),
    "diarrhea": _topic("diarrh, stool, bowel, loose", "Have you had diarrhoea?", "No, my bowels are normal."),
    "meals": _topic("eat, meal, food, fatty, appetite", "Is the pain related to eating?", "Food makes no difference."),
    "urine": _topic("urin, pee, burning, bladder", "Any burning when you pass urine?", "No, that's all normal."),
    "medicines": _topic(
        "medic, pill, painkiller, ibuprofen, taking", "Are you taking any medicines?", "Nothing regular."
    ),
    "contacts": _topic("anyone, others, family, around you", "Is anyone around you ill too?", "No, nobody else."),
    "glands": _topic("gland, lymph, swollen, lump", "Are the glands in your neck swollen?", "No, nothing swollen."),
    "tonsils": _topic(
        "tonsil, white patch, mouth", "Have you seen white patches on your tonsils?", "Not that I've seen."
    ),
}


class Finding(NamedTuple):
    label: str
    """What the finding means, for telling conditions apart ("high" fever, "coloured" phlegm)."""
    text: str
    """What the patient says."""


@dataclass(frozen=True)
class Condition:
    name: str
    aliases: tuple[str, ...]
    group: str
    """The presenting complaint it shares with the others of its group."""
    findings: dict[str, Finding]
    """Topic -> finding; any other topic gets the topic's negative answer (label "no")."""
    durations: tuple[str, ...]
    advice: str
    ages: tuple[int, int] = (18, 70)


COMPLAINTS: dict[str, tuple[str, ...]] = {
    "cough": ("I've had this cough and I feel rotten.", "I can't stop coughing.", "This cough won't go away."),
    "headache": ("I've got a bad headache.", "My head hurts.", "I have a headache that worries me."),
    "stomach": ("I have pain in my stomach.", "My tummy hurts.", "I've got stomach ache."),
    "throat": ("My throat is really sore.", "It hurts to swallow.", "I have a sore throat."),
}
F = Finding
CONDITIONS: tuple[Condition, ...] = (
    # -- cough
    Condition(
        "common cold", ("head cold", "upper respiratory tract infection", "viral URI"), "cough",
        {"runny_nose": F("yes", "Yes, my nose is running and I keep sneezing."),
         "fever": F("mild", "Maybe a little warm, nothing much."), "cough": F("dry", "Yes, a tickly cough.")},
        ("two days", "three days", "four days"), "Rest, fluids and paracetamol; it should clear within ten days.",
    ),
    Condition(
        "influenza", ("flu",), "cough",
        {"fever": F("high", "Yes, a high fever that came on suddenly, with shivers."),
         "aches": F("yes", "Yes, I ache all over."), "tiredness": F("severe", "Completely wiped out."),
         "cough": F("dry", "Yes, a dry cough.")},
        ("one day", "two days"), "Rest, fluids and paracetamol at home; come back if breathing becomes difficult.",
    ),
    Condition(
        "pneumonia", ("community-acquired pneumonia", "chest infection"), "cough",
        {"fever": F("high", "Yes, high, with sweats."), "sputum": F("coloured", "Yes, thick yellow-green phlegm."),
         "breathing": F("breathless", "Yes, I get out of breath just crossing the room."),
         "chest_pain": F("pleuritic", "A sharp pain on one side when I breathe in."),
         "cough": F("productive", "Yes, a deep cough.")},
        ("four days", "five days", "a week"),
        "This needs a chest examination and likely antibiotics today; seek urgent care if breathing worsens.",
        (30, 85),
    ),
    Condition(
        "asthma", ("asthma attack", "asthma exacerbation"), "cough",
        {"breathing": F("wheeze", "Yes, I wheeze and my chest feels tight."),
         "triggers": F("night, exercise", "It's worse at night and when I exercise."),
         "history": F("childhood", "I had asthma as a child."), "cough": F("night", "Yes, mostly at night.")},
        ("two weeks", "three weeks"), "Use a reliever inhaler and see your doctor about a preventer inhaler.",
        (12, 50),
    ),
    Condition(
        "acute bronchitis", ("bronchitis",), "cough",
        {"sputum": F("clear", "Yes, clear or whitish phlegm."),
         "history": F("after cold", "I had a cold two weeks ago that left this cough."),
         "chest_pain": F("sore", "My chest is a bit sore from all the coughing."),
         "cough": F("productive", "Yes, a chesty cough.")},
        ("ten days", "two weeks", "three weeks"), "Rest and fluids; it settles within weeks, antibiotics do not help.",
    ),
    # -- headache
    Condition(
        "tension headache", ("tension-type headache",), "headache",
        {"pain_site": F("band", "Like a tight band all around my head."),
         "triggers": F("stress", "It's worse when I'm stressed at work."),
         "neck": F("tense", "My neck muscles feel tense, but I can bend it fine.")},
        ("since this morning", "two days"), "Regular breaks, sleep and simple painkillers; look at what causes stress.",
    ),
    Condition(
        "migraine", ("migraine headache",), "headache",
        {"pain_site": F("one side", "One side of my head, throbbing."),
         "light": F("aura", "Light hurts, and I saw zigzag lines before it started."),
         "nausea": F("yes", "Yes, I feel sick."), "history": F("recurrent", "I get these every few months.")},
        ("a few hours", "since last night"), "Rest in a dark, quiet room and take a painkiller early; keep a diary.",
        (14, 55),
    ),
    Condition(
        "sinusitis", ("sinus infection", "rhinosinusitis"), "headache",
        {"pain_site": F("face", "Over my forehead and cheeks, worse when I bend forward."),
         "runny_nose": F("thick", "Yes, thick yellow stuff from my nose."), "fever": F("mild", "A slight temperature."),
         "history": F("after cold", "I had a cold just before this.")},
        ("ten days", "two weeks"), "Saline nose rinses and painkillers; see a doctor if it lasts or worsens.",
    ),
    Condition(
        "meningitis", ("bacterial meningitis",), "headache",
        {"pain_site": F("worst", "All over; the worst headache of my life."), "fever": F("high", "Yes, very high."),
         "neck": F("stiff", "So stiff I can't put my chin on my chest."),
         "light": F("photophobia", "Bright light is unbearable."), "rash": F("purple", "Purple spots on my legs."),
         "nausea": F("yes", "I've vomited twice.")},
        ("since yesterday", "a few hours"), "This is an emergency: go to hospital now for urgent treatment.", (16, 40),
    ),
    # -- stomach
    Condition(
        "gastroenteritis", ("stomach flu", "gastro"), "stomach",
        {"diarrhea": F("yes", "Yes, watery diarrhoea many times a day."), "nausea": F("yes", "Yes, I've vomited."),
         "pain_site": F("all over", "Cramps all over my belly."),
         "contacts": F("yes", "My partner has the same since we ate out.")},
        ("one day", "two days"), "Drink plenty of fluids in small sips; get help if you cannot keep fluids down.",
    ),
    Condition(
        "appendicitis", ("acute appendicitis",), "stomach",
        {"pain_site": F("lower right", "It started around my belly button and moved to the lower right."),
         "fever": F("mild", "A slight temperature."), "meals": F("no appetite", "I've lost my appetite completely."),
         "triggers": F("movement", "Walking or coughing makes it much worse.")},
        ("since yesterday", "about a day"), "Go to the emergency department now: this may need surgery.", (10, 40),
    ),
    Condition(
        "gallstones", ("biliary colic", "cholelithiasis"), "stomach",
        {"pain_site": F("upper right", "Upper right, under my ribs, through to my right shoulder blade."),
         "meals": F("fatty", "It comes on after fatty meals."), "history": F("recurrent", "I've had a few attacks.")},
        ("a few hours", "since last night"), "Avoid fatty meals and see a doctor for an ultrasound scan.", (35, 75),
    ),
    Condition(
        "peptic ulcer", ("stomach ulcer", "duodenal ulcer"), "stomach",
        {"pain_site": F("upper middle", "A burning in the middle of my upper belly."),
         "meals": F("eased", "Eating eases it for a while."),
         "medicines": F("nsaid", "I take ibuprofen most days for my back.")},
        ("three weeks", "a month"), "Stop ibuprofen and see a doctor for acid-reducing treatment and a test.", (30, 75),
    ),
    Condition(
        "urinary tract infection", ("UTI", "cystitis", "bladder infection"), "stomach",
        {"pain_site": F("lower middle", "Low down in the middle, over my bladder."),
         "urine": F("burning", "Yes, it burns and I need to go all the time.")},
        ("two days", "three days"), "Drink plenty and see a doctor for a urine test and antibiotics.",
    ),
    # -- sore throat
    Condition(
        "strep throat", ("streptococcal pharyngitis", "strep"), "throat",
        {"fever": F("high", "Yes, a high fever."), "tonsils": F("white", "Yes, white patches on my tonsils."),
         "glands": F("neck", "Yes, the glands in my neck are swollen and tender.")},
        ("two days", "three days"), "See a doctor for a throat swab, and antibiotics if it is strep.", (5, 40),
    ),
    Condition(
        "viral pharyngitis", ("viral sore throat", "pharyngitis"), "throat",
        {"cough": F("dry", "Yes, a bit of a cough."), "runny_nose": F("yes", "Yes, a runny nose too."),
         "fever": F("mild", "Only slightly warm.")},
        ("two days", "three days"), "Rest, fluids, throat lozenges and paracetamol; it clears in about a week.",
    ),
    Condition(
        "infectious mononucleosis", ("mononucleosis", "glandular fever", "mono"), "throat",
        {"tiredness": F("severe", "I'm exhausted all the time, for weeks now."), "fever": F("mild", "On and off."),
         "glands": F("widespread", "Yes, in my neck and under my arms too."),
         "tonsils": F("swollen", "They look swollen.")},
        ("two weeks", "three weeks"), "Rest and fluids; avoid contact sports for a month because of the spleen.",
        (14, 25),
    ),
    Condition(
        "peritonsillar abscess", ("tonsillar abscess", "quinsy"), "throat",
        {"fever": F("high", "Yes, high."), "pain_site": F("one side", "Much worse on one side; I can't open wide."),
         "tonsils": F("one side", "One side is hugely swollen and pushes to the middle.")},
        ("four days", "five days"), "Go to hospital today: the abscess needs draining.", (15, 40),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    case_id: str
    diagnosis: str
    aliases: tuple[str, ...]
    complaint: str
    age: int
    sex: str
    findings: dict[str, str]
    """Topic -> the patient's answer; topics not here get `TOPICS[topic].negative`."""
    advice: str
    candidates: tuple[str, ...] = ()
    """The conditions this one must be told apart from (its complaint group)."""


def generate_case(rng: np.random.Generator) -> Case:
    """A case of a condition drawn uniformly from `CONDITIONS`."""
    condition = CONDITIONS[int(rng.integers(len(CONDITIONS)))]
    low, high = condition.ages
    age = int(rng.integers(low, high + 1))
    duration = condition.durations[int(rng.integers(len(condition.durations)))]
    complaints = COMPLAINTS[condition.group]
    findings = {"duration": f"For {duration}.", **{topic: f.text for topic, f in condition.findings.items()}}
    group = tuple(c.name for c in CONDITIONS if c.group == condition.group)
    return Case(
        case_id="",
        diagnosis=condition.name,
        aliases=(condition.name, *condition.aliases),
        complaint=complaints[int(rng.integers(len(complaints)))],
        age=age,
        sex=(("woman", "man") if age >= 18 else ("girl", "boy"))[int(rng.integers(2))],
        findings=findings,
        advice=condition.advice,
        candidates=group,
    )


def case_from_row(row: Mapping[str, Any], where: str) -> Case:
    """A case from a user's file row: `complaint`, `diagnosis`, `findings` ({topic: answer}), and optional
    `aliases`, `advice`, `age`, `sex`, `id`. Raises ValueError saying what is wrong."""
    missing = [key for key in ("complaint", "diagnosis", "findings") if not row.get(key)]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (a case has complaint, diagnosis and findings)")
    findings = row["findings"]
    if not isinstance(findings, dict):
        raise ValueError(f"{where}: findings must be an object of topic -> answer")
    unknown = sorted(set(findings) - set(TOPICS))
    if unknown:
        raise ValueError(f"{where}: unknown finding topic(s) {', '.join(unknown)}; topics are {', '.join(TOPICS)}")
    aliases = tuple(str(a) for a in row.get("aliases") or ())
    return Case(
        case_id=str(row.get("id") or ""),
        diagnosis=str(row["diagnosis"]),
        aliases=(str(row["diagnosis"]), *aliases),
        complaint=str(row["complaint"]),
        age=int(row.get("age") or 40),
        sex=str(row.get("sex") or "patient"),
        findings={str(k): str(v) for k, v in findings.items()},
        advice=str(row.get("advice") or "See your doctor to confirm this and discuss treatment."),
    )


# -- the rule-based patient ---------------------------------------------------------------

_KEYWORDS = [
    (re.compile(r"\b" + re.escape(keyword)), topic) for topic, spec in TOPICS.items() for keyword in spec.keywords
]


def match_topic(question: str) -> str | None:
    """The topic a question asks about: the one whose keyword comes first in it (None when none does)."""
    text = question.lower()
    found = [
        (match.start(), -len(pattern.pattern), topic) for pattern, topic in _KEYWORDS if (match := pattern.search(text))
    ]
    return min(found)[2] if found else None


def patient_answer(case: Case, question: str) -> str:
    """What the rule-based patient says to `question`: the one topic it asks about, from the record."""
    topic = match_topic(question)
    if topic is None:
        return "Sorry, I'm not sure what you mean. Could you ask me something more specific?"
    return case.findings.get(topic, TOPICS[topic].negative)


CONFIRMING = 2
"""The expert diagnoses once at least this many answers were findings of the diagnosis."""


def distinguishing_topics(case: Case) -> list[str]:
    """The topics the expert asks about, as a doctor who does not know the diagnosis would: while more
    than one condition of the complaint group fits the answers so far, the topic whose answer splits
    them into the smallest groups on average (first in `TOPICS` order on a tie); each answer then
    keeps the conditions that would have answered the same. Then, until `CONFIRMING` answers were
    findings of the condition left (not the absence of one), its other findings in table order. A
    user's case, with no group, gets every topic of its record."""
    if not case.candidates:
        return [topic for topic in case.findings if topic in TOPICS]
    labels = {c.name: {topic: finding.label for topic, finding in c.findings.items()} for c in CONDITIONS}
    truth = labels[case.diagnosis]
    fitting = list(case.candidates)
    asked: list[str] = []
    while len(fitting) > 1:
        best = min((topic for topic in TOPICS if topic not in asked), key=lambda t: _split_cost(labels, fitting, t))
        assert _split_cost(labels, fitting, best) < len(fitting) ** 2, f"nothing tells {fitting} apart"
        asked.append(best)
        fitting = [name for name in fitting if labels[name].get(best, "no") == truth.get(best, "no")]
    confirming = [topic for topic in truth if topic not in asked]
    missing = CONFIRMING - sum(topic in truth for topic in asked)
    return asked + confirming[: max(missing, 0)]


def _split_cost(labels: Mapping[str, Mapping[str, str]], names: list[str], topic: str) -> int:
    """How many conditions an answer on `topic` leaves, summed over `names` (the sum of squared group sizes)."""
    sizes = Counter(labels[name].get(topic, "no") for name in names)
    return sum(size * size for size in sizes.values())


# -- the diagnosis --------------------------------------------------------------------------


def _normalize(text: str) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def named_conditions(text: str, aliases_by_name: Mapping[str, Iterable[str]]) -> set[str]:
    """The conditions `text` names, through any alias; a longer alias is matched first, so
    "streptococcal pharyngitis" is strep throat and not also viral pharyngitis."""
    remaining = _normalize(text)
    pairs = sorted(
        ((_normalize(a).strip(), name) for name, aliases in aliases_by_name.items() for a in aliases),
        key=lambda p: -len(p[0]),
    )
    named = set()
    for alias, name in pairs:
        if alias and f" {alias} " in remaining:
            named.add(name)
            remaining = remaining.replace(f" {alias} ", " | ")
    return named


def condition_aliases() -> dict[str, tuple[str, ...]]:
    """Every built-in condition's name and aliases."""
    return {condition.name: (condition.name, *condition.aliases) for condition in CONDITIONS}
