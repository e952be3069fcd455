"""A fictional world for the search environment: entities, their passages, multi-hop questions, BM25 retrieval.

Pure functions over plain data, with all randomness from the `numpy.random.Generator` passed
in; the environment lives in `search.py` (the split of PettingZoo's tictactoe `board.py`).

A world holds people, organisations, cities and regions with invented names (syllables drawn
at random, every name word distinct within the world), so no model knows a fact about them
before it reads the passages. Each entity has one passage stating its own links and facts:

    person        born_in -> city, works_for -> organisation, mentor -> person; birth year, profession
    organisation  headquarters -> city, founder -> person; founding year
    city          region -> region, mayor -> person; river
    region        capital -> city; highest mountain

Every link is a function (one object per subject), so a chain of links from a named entity
has exactly one answer. A question of `hops` links names only the first entity; each hop's
fact is in a different passage (the chain never visits an entity twice), so answering takes
one search per hop.

`normalize_answer` and `answer_matches` are the success check (SQuAD's normalized exact
match); `Bm25Index` ranks passages with BM25 (the `bm25s` package) over `tokenize`'s words.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

KINDS = ("person", "organisation", "city", "region")
WORLD_SIZE = {"person": 24, "organisation": 8, "city": 10, "region": 4}


class Link(NamedTuple):
    """A relation between two kinds of entity, and the words that ask about it."""

    subject: str
    object: str
    description: str
    """`{x}`'s object described in words, for nesting inside a longer question."""
    question: str
    keyword: str
    """The word of the subject's passage that states the link (the expert adds it to its query)."""
    wanted: str
    """The link in words, as the expert asks for it ("where they were born")."""


class Fact(NamedTuple):
    """An attribute of one kind of entity; questions end on a link or a fact."""

    subject: str
    question: str
    keyword: str
    wanted: str


# name: Link(subject, object, description, question, keyword, wanted)
LINKS: dict[str, Link] = {
    "born_in": Link("person", "city", "the birthplace of {x}", "In which city was {x} born?",
                    "born", "where they were born"),
    "works_for": Link("person", "organisation", "the employer of {x}", "Which organisation does {x} work for?",
                      "works", "the organisation they work for"),
    "mentor": Link("person", "person", "the mentor of {x}", "Who was the mentor of {x}?",
                   "mentor", "who their mentor was"),
    "headquarters": Link("organisation", "city", "the city where {x} has its headquarters",
                         "In which city does {x} have its headquarters?", "headquarters", "where its headquarters are"),
    "founder": Link("organisation", "person", "the founder of {x}", "Who founded {x}?",
                    "founded", "who founded it"),
    "region": Link("city", "region", "the region of {x}", "In which region does {x} lie?",
                   "region", "the region it lies in"),
    "mayor": Link("city", "person", "the mayor of {x}", "Who is the mayor of {x}?",
                  "mayor", "who its mayor is"),
    "capital": Link("region", "city", "the capital of {x}", "What is the capital of {x}?",
                    "capital", "its capital"),
}  # fmt: skip
# name: Fact(subject, question, keyword, wanted)
FACTS: dict[str, Fact] = {
    "birth_year": Fact("person", "In what year was {x} born?", "born", "the year they were born"),
    "founded_year": Fact("organisation", "In what year was {x} founded?", "founded", "the year it was founded"),
    "river": Fact("city", "On which river does {x} lie?", "river", "the river it lies on"),
    "mountain": Fact("region", "What is the highest mountain of {x}?", "mountain", "its highest mountain"),
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "dr", "kr", "br", "gl", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "ou", "ei")
_CODAS = ("", "", "n", "r", "l", "s", "th", "x", "sk", "m", "rv", "nd")
_ORGANISATION_TYPES = ("Guild", "Company", "Institute", "Society", "Foundry", "Collective", "Syndicate", "Academy")
_PROFESSIONS = (
    "cartographer", "glassblower", "archivist", "shipwright", "astronomer", "apothecary",
    "clockmaker", "bookbinder", "surveyor", "engraver", "weaver", "lamplighter",
)  # fmt: skip


@dataclass
class Entity:
    key: str
    """`kind:number`, unique in its world."""
    kind: str
    name: str
    links: dict[str, str] = field(default_factory=dict)
    """Link name -> the key of its object."""
    facts: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    """Words the passage uses that no question asks about (a profession, a kind of organisation)."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hop:
    """One step of a question: the entity whose passage states the next link or the answer."""

    entity: str
    relation: str
    passage_id: str
    query: str
    """What the expert searches for this hop: the entity's name and the link's keyword."""
    wanted: str
    """What the hop looks for, in words ("where they were born")."""


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]
    """The gold answer and its accepted spellings (`Velmora River`, `Velmora`)."""
    hops: tuple[Hop, ...]
    wrong_answer: str
    """A plausible wrong answer: the same relation's object for another entity."""


@dataclass(frozen=True)
class World:
    entities: dict[str, Entity]
    passages: tuple[Passage, ...]


# -- the world ----------------------------------------------------------------------------


def invent_word(rng: np.random.Generator, syllables: int) -> str:
    parts = []
    for _ in range(syllables):
        parts += [_pick(rng, _ONSETS), _pick(rng, _VOWELS)]
    return ("".join(parts) + _pick(rng, _CODAS)).capitalize()


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def generate_world(rng: np.random.Generator) -> World:
    """A world of `WORLD_SIZE` entities with invented names, every link set, and one passage each."""
    used: set[str] = set()

    def new_word(syllables: int) -> str:
        while True:
            word = invent_word(rng, syllables)
            if word.lower() not in used and len(word) >= 4:
                used.add(word.lower())
                return word

    entities: dict[str, Entity] = {}
    by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for kind in KINDS:
        for number in range(WORLD_SIZE[kind]):
            if kind == "person":
                name = f"{new_word(2)} {new_word(int(rng.integers(2, 4)))}"
            elif kind == "organisation":
                name = f"{new_word(int(rng.integers(2, 4)))} {_pick(rng, _ORGANISATION_TYPES)}"
            else:
                name = new_word(int(rng.integers(2, 4)))
            entities[f"{kind}:{number}"] = Entity(f"{kind}:{number}", kind, name)
            by_kind[kind].append(f"{kind}:{number}")
    _link_world(rng, entities, by_kind)
    for entity in entities.values():
        _set_facts(rng, entity, new_word)
    passages = tuple(render_passage(entity, entities) for entity in entities.values())
    return World(entities, passages)


def _link_world(rng: np.random.Generator, entities: dict[str, Entity], by_kind: dict[str, list[str]]) -> None:
    people, organisations, cities, regions = (by_kind[kind] for kind in KINDS)
    for number, city in enumerate(cities):  # every region gets a city first, so each has a capital
        entities[city].links["region"] = regions[number] if number < len(regions) else _pick(rng, regions)
    for region in regions:
        own = [city for city in cities if entities[city].links["region"] == region]
        entities[region].links["capital"] = _pick(rng, own)
    mayors = rng.permutation(len(people))[: len(cities)]  # nobody is mayor of two cities
    for city, mayor in zip(cities, mayors):
        entities[city].links["mayor"] = people[int(mayor)]
    for organisation in organisations:
        entities[organisation].links["headquarters"] = _pick(rng, cities)
        entities[organisation].links["founder"] = _pick(rng, people)
    for person in people:
        entities[person].links["born_in"] = _pick(rng, cities)
        entities[person].links["works_for"] = _pick(rng, organisations)
        entities[person].links["mentor"] = _pick(rng, [other for other in people if other != person])


def _set_facts(rng: np.random.Generator, entity: Entity, new_word) -> None:
    if entity.kind == "person":
        entity.facts["birth_year"] = str(int(rng.integers(1720, 1960)))
        entity.details["profession"] = _pick(rng, _PROFESSIONS)
    elif entity.kind == "organisation":
        entity.facts["founded_year"] = str(int(rng.integers(1600, 1950)))
    elif entity.kind == "city":
        entity.facts["river"] = f"{new_word(int(rng.integers(2, 4)))} River"
    else:
        entity.facts["mountain"] = f"Mount {new_word(int(rng.integers(2, 4)))}"


def display_name(entity: Entity) -> str:
    return f"the {entity.name}" if entity.kind == "organisation" else entity.name


def _with_article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def render_passage(entity: Entity, entities: dict[str, Entity]) -> Passage:
    """The entity's passage: its name, then each of its links and facts in a sentence."""

    def name_of(link: str) -> str:
        return display_name(entities[entity.links[link]])

    facts = entity.facts
    if entity.kind == "person":
        surname = entity.name.split()[-1]
        text = (
            f"{entity.name} was {_with_article(entity.details['profession'])}, born in {facts['birth_year']} in "
            f"{name_of('born_in')}. {surname} works for {name_of('works_for')}. "
            f"The mentor of {surname} was {name_of('mentor')}."
        )
    elif entity.kind == "organisation":
        kind = entity.name.split()[-1].lower()
        text = (
            f"The {entity.name} is {_with_article(kind)} founded in {facts['founded_year']} by {name_of('founder')}. "
            f"The {entity.name} has its headquarters in {name_of('headquarters')}."
        )
    elif entity.kind == "city":
        text = (
            f"{entity.name} is a city on the {facts['river']}, in the region of {name_of('region')}. "
            f"The mayor of {entity.name} is {name_of('mayor')}."
        )
    else:
        text = (
            f"{entity.name} is a region whose capital is {name_of('capital')}. "
            f"The highest mountain of {entity.name} is {facts['mountain']}."
        )
    return Passage(entity.key, entity.name, text)


# -- questions ----------------------------------------------------------------------------


def generate_question(rng: np.random.Generator, world: World, hops: int) -> Question:
    """A question whose answer takes `hops` passages: a chain of links from a random entity, ending
    on a link or a fact, that never visits an entity twice."""
    if hops not in (1, 2, 3):
        raise ValueError(f"hops must be 1, 2 or 3, got {hops!r}")
    entities = world.entities
    keys = list(entities)
    while True:
        start = _pick(rng, keys)
        chain, relations = [start], []
        for step in range(hops):
            here = entities[chain[-1]]
            last = step == hops - 1
            options = [name for name, link in LINKS.items() if link.subject == here.kind]
            options = [name for name in options if entities[here.key].links[name] not in chain]
            if last:
                options += [name for name, fact in FACTS.items() if fact.subject == here.kind]
            if not options:
                break
            relation = _pick(rng, options)
            relations.append(relation)
            if relation in LINKS:
                chain.append(here.links[relation])
        else:
            return _question_from(world, chain, relations, rng)


def _question_from(world: World, chain: list[str], relations: list[str], rng: np.random.Generator) -> Question:
    entities = world.entities
    described = display_name(entities[chain[0]])
    hops = []
    for key, relation in zip(chain, relations):
        entity = entities[key]
        spec = LINKS.get(relation) or FACTS[relation]
        hops.append(Hop(entity.name, relation, key, f"{entity.name} {spec.keyword}", spec.wanted))
    for relation in relations[:-1]:
        described = LINKS[relation].description.format(x=described)
    final = relations[-1]
    text = (LINKS.get(final) or FACTS[final]).question.format(x=described)
    text = text[0].upper() + text[1:]
    subject = entities[hops[-1].passage_id]
    others = [e for e in entities.values() if e.kind == subject.kind and e.key != subject.key]
    if final in LINKS:
        answer = entities[subject.links[final]]
        wrong_options = [e.name for e in entities.values() if e.kind == answer.kind and e.key != answer.key]
        answers = (answer.name,)
    else:
        value = subject.facts[final]
        wrong_options = [e.facts[final] for e in others if e.facts[final] != value]
        answers = (value, value.removeprefix("Mount ").removesuffix(" River"))
    return Question(text, tuple(dict.fromkeys(answers)), tuple(hops), _pick(rng, sorted(wrong_options)))


# -- answers ------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD's rule)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def answer_matches(answer: str, golds: tuple[str, ...] | list[str]) -> bool:
    """Normalized exact match against any gold answer; an answer that normalizes to nothing never matches."""
    normalized = normalize_answer(answer)
    return bool(normalized) and any(normalized == normalize_answer(gold) for gold in golds)


# -- retrieval ----------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the this to was "
    "were what when where which who whom whose why with".split()
)


def tokenize(text: str) -> list[str]:
    """Lowercase words and numbers, without stopwords."""
    return [word for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


class Bm25Index:
    """BM25 over passages (title and text), with the `bm25s` package's Lucene variant."""

    def __init__(self, passages: tuple[Passage, ...] | list[Passage]):
        import bm25s  # imported here: `pettingllms envs` must not pay for it

        if not passages:
            raise ValueError("a BM25 index needs at least one passage")
        self.passages = tuple(passages)
        self._bm25 = bm25s.BM25()
        self._bm25.index([tokenize(f"{p.title} {p.text}") for p in self.passages], show_progress=False)

    def search(self, query: str, k: int) -> list[Passage]:
        """The best `k` passages for `query`, best first; passages sharing no word with it are left out."""
        words = tokenize(query)
        if not words:
            return []
        k = min(k, len(self.passages))
        documents, scores = self._bm25.retrieve([words], k=k, show_progress=False, n_threads=1)
        return [self.passages[int(d)] for d, score in zip(documents[0], scores[0]) if score > 0]
