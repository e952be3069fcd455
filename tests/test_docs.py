"""docs/data-format.md against the files a real collection writes.

Every key found in the real files must have a row in the doc's tables, and every row of those
tables must name a key that is really there, so the page cannot drift in either direction. A
table is found by the heading above it; a row is `| `name` | ...`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pettingllms.collect import TRANSIENT_ERROR_KINDS, collect
from pettingllms.config import load_config
from pettingllms.records import Episode, EpisodeError, Record, RecordMetadata, Turn
from pettingllms.runfiles import RunFiles

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-format.md"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$")
FENCE = re.compile(r"^```json\n(.*?)^```$", re.DOTALL | re.MULTILINE)
PLACEHOLDER = RunFiles(Path("."), "<run>")
"""The files of a run named `<run>`: their names are the doc's section headings."""


# ---------------------------------------------------------------- reading the doc


def doc_tables() -> dict[str, dict[str, list[str]]]:
    """{heading: {name: [the row's other cells]}} for every table row whose first cell is a `name`."""
    tables: dict[str, dict[str, list[str]]] = {}
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif match := ROW.match(line):
            cells = [cell.strip() for cell in match[2].split("|")]
            tables.setdefault(heading, {})[match[1]] = cells
    return tables


def table(heading: str) -> set[str]:
    tables = doc_tables()
    assert heading in tables, f"docs/data-format.md has no table under '### {heading}'"
    return set(tables[heading])


def doc_examples() -> dict[str, list[Any]]:
    """{section heading (`## ...`, unescaped): the JSON examples in it, parsed}."""
    examples: dict[str, list[Any]] = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        heading = html.unescape(section.splitlines()[0])
        examples[heading] = [json.loads(block) for block in FENCE.findall(section)]
    return examples


def example_of(file_name: str) -> Any:
    """The example shown in the section about `file_name` (the first JSON block there)."""
    for heading, blocks in doc_examples().items():
        if heading.startswith(file_name):
            assert blocks, f"the section on {file_name} has no ```json example"
            return blocks[0]
    raise AssertionError(f"docs/data-format.md has no section '## {file_name}...'")


# ---------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    """A small real collection (one agent not trainable, so a drop reason and an identity entry show)."""
    folder = tmp_path_factory.mktemp("docrun")
    config = load_config(
        [
            "env.name=sokoban",
            "policy=expert",
            "policy.error_rate=0.5",
            "agents.planner.trainable=false",
            "training.sft_num_episodes=4",
            "training.rollout_concurrency=2",
            f"training.sft_data_dir={folder}",
            "training.run_name=doc",
        ]
    )
    files = collect(config).files
    records = [json.loads(line) for line in files.records.read_text().splitlines()]
    episodes = [json.loads(line) for line in files.rollouts.read_text().splitlines()]
    assert records and episodes, "the run must keep some records to compare with"
    return {
        "records": records,
        "episodes": episodes,
        "stats": json.loads(files.stats.read_text()),
        "config": json.loads(files.config.read_text()),
    }


def keys_of(rows: list[dict[str, Any]]) -> set[str]:
    return {key for row in rows for key in row}


def stats_names(stats: dict[str, Any]) -> set[str]:
    """The stats file's keys as the doc writes them: nested ones with dots, an agent as `<agent>`."""
    names = set(stats)
    for key, value in stats.items():
        if key == "per_agent":
            names |= {f"per_agent.<agent>.{field}" for counts in value.values() for field in counts}
        elif isinstance(value, dict) and key not in ("removed", "errors"):  # those two map free names
            names |= {f"{key}.{field}" for field in value}
    return names


def documented_stats(stats: dict[str, Any]) -> set[str]:
    names = table("Stats fields")
    if stats["kept_record_tokens"] is None:  # no tokenizer here: its fields cannot be compared
        names = {name for name in names if not name.startswith("kept_record_tokens.")}
    return names


# ---------------------------------------------------------------- the tests


def test_every_file_of_a_run_is_described():
    text = DOC.read_text()
    for path in (PLACEHOLDER.records, PLACEHOLDER.stats, PLACEHOLDER.config, PLACEHOLDER.rollouts):
        assert f"`{path.name}`" in text
        example_of(path.name)


@pytest.mark.slow
def test_record_fields_match_the_real_records_file(run):
    records = run["records"]
    assert keys_of(records) == table("Record fields")
    assert keys_of([record["metadata"] for record in records]) == table("Metadata fields")
    messages = [message for record in records for message in record["messages"]]
    assert keys_of(messages) == table("Message fields")


def test_episode_and_turn_fields_match_the_real_ledger(run):
    episodes = run["episodes"]
    assert keys_of(episodes) == table("Episode fields")
    turns = [turn for episode in episodes for turn in episode["turns"]]
    assert keys_of(turns) == table("Turn fields")
    assert keys_of([message for turn in turns for message in turn["messages"]]) == table("Message fields")


def test_tables_match_the_schemas_in_code():
    """The TypedDicts name every field, the error's too (an expert run has no error episode)."""
    for schema, heading in (
        (Record, "Record fields"),
        (RecordMetadata, "Metadata fields"),
        (Episode, "Episode fields"),
        (Turn, "Turn fields"),
        (EpisodeError, "Error fields"),
    ):
        assert set(schema.__annotations__) == table(heading), heading


def test_stats_fields_match_the_real_stats_file(run):
    stats = run["stats"]
    assert stats_names(stats) == documented_stats(stats)
    assert stats["removed"], "agents.planner.trainable=false must drop turns"
    assert set(stats["removed"]) <= table("Drop reasons")
    assert set(stats["errors"]) <= table("Error kinds")


def test_config_file_fields_match_the_real_config_file(run):
    saved = run["config"]
    assert set(saved) == table("Config file fields")
    assert set(saved["identity"]) == table("Identity fields")


def test_transient_error_kinds_are_the_ones_resume_plays_again():
    kinds = doc_tables()["Error kinds"]
    assert {kind for kind, cells in kinds.items() if cells[0] == "yes"} == set(TRANSIENT_ERROR_KINDS)
    assert all(cells[0] in ("yes", "no") for cells in kinds.values())


def test_examples_have_the_fields_of_the_real_files(run):
    record = example_of(PLACEHOLDER.records.name)
    assert set(record) == table("Record fields")
    assert set(record["metadata"]) == table("Metadata fields")
    episode = example_of(PLACEHOLDER.rollouts.name)
    assert set(episode) == table("Episode fields")
    assert all(set(turn) == table("Turn fields") for turn in episode["turns"])
    stats = example_of(PLACEHOLDER.stats.name)
    assert stats_names(stats) == table("Stats fields")
    saved = example_of(PLACEHOLDER.config.name)
    assert set(saved) == table("Config file fields")
    assert set(saved["identity"]) == table("Identity fields")
    assert set(saved["config"]) == set(run["config"]["config"])


def test_every_test_the_readme_names_exists():
    """The README's reliability promises each name the test that checks them: those tests must exist."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    named = re.findall(r"(tests/test_\w+\.py)?::(test_\w+)", readme)
    assert len(named) >= 10
    current = None
    for file, test in named:
        current = file or current
        source = (Path(__file__).resolve().parent.parent / current).read_text()
        assert f"def {test}(" in source, f"README names {current}::{test}, which does not exist"
