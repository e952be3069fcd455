import json
import re
import shutil
import subprocess
import time

import pytest
from synthetic_runs import NASTY, make_episode, standard_episodes, write_run

from pettingllms.exceptions import DataError
from pettingllms.report import (
    EPISODE_FIELDS,
    TURN_FIELDS,
    episode_payload,
    read_data_block,
    render_report,
    script_json,
    write_report,
)
from pettingllms.stats import load_run
from pettingllms.training_log import TrainingResults

DATA_BLOCK = re.compile(r'<script id="episode-data" type="application/json">(.*?)</script>', re.DOTALL)


def page_data(page: str) -> dict:
    """The plain JSON block of a page (a small run's), parsed here without the module's reader."""
    (block,) = DATA_BLOCK.findall(page)
    return json.loads(block)


def transcript_of(data: dict, episode_id: str) -> list[dict]:
    """The turns of one episode, as dicts, with the string-table indexes resolved."""
    episode = dict(zip(EPISODE_FIELDS, next(row for row in data["episodes"] if row[0] == episode_id)))
    strings = data["strings"]
    turns = []
    for row in episode["turns"]:
        turn = dict(zip(TURN_FIELDS, row))
        turn["agent"], turn["response"] = strings[turn["agent"]], strings[turn["response"]]
        turn["messages"] = [(strings[role], strings[content]) for role, content in turn["messages"]]
        turns.append(turn)
    return turns


@pytest.fixture
def nasty_run(tmp_path):
    episodes = standard_episodes()
    episodes[0]["turns"][0]["response"] = NASTY
    episodes[0]["turns"][0]["details"]["stderr"] = "</SCRIPT >" + NASTY
    return write_run(tmp_path, "toy", episodes)


def page_of(files, **options) -> str:
    """The page of a run without its plots (drawing them is the slow part, tested once below)."""
    return render_report(load_run(files.rollouts), TrainingResults(), {"lengths": b"\x89PNG fake"}, **options)


def test_report_holds_settings_tables_plots_and_every_episode(nasty_run):
    page = page_of(nasty_run)
    data = page_data(page)
    assert len(data["episodes"]) == 6 and data["agents"] == ["planner", "tool"]
    kept_turns = [turn[TURN_FIELDS.index("kept")] for row in data["episodes"] for turn in row[-1]]
    assert sum(kept_turns) == 8 and len(kept_turns) == 22
    outcomes = [row[EPISODE_FIELDS.index("outcome")] for row in data["episodes"]]
    assert sorted(outcomes) == ["error", "failed", "failed", "success", "success", "success"]
    for text in ("env.name", "Per agent", "Per turn", "Per task", "Rewards", "Removed by the filters", "http_5xx"):
        assert text in page
    assert page.count("data:image/png;base64,") == 1
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page  # settings are escaped too


def test_model_text_is_escaped_and_comes_back_exactly(nasty_run):
    page = page_of(nasty_run)
    assert page.lower().count("</script") == 2  # the data block's and the browser script's own
    assert "<script>alert" not in page and "<!-- <b>" not in page
    first = transcript_of(page_data(page), "toy-train-0-0")[0]
    assert first["response"] == NASTY and first["details"]["stderr"] == "</SCRIPT >" + NASTY
    assert first["messages"] == [("system", "You are the tool agent."), ("user", "Solve task, turn 0.")]
    assert first["kept"] == 1 and first["valid"] == 1


def test_a_big_run_is_gzipped_into_the_page_and_reads_back_the_same(nasty_run):
    plain, packed = page_of(nasty_run), page_of(nasty_run, compress_above=0)
    assert 'data-encoding="gzip+base64"' in packed and 'data-encoding="gzip+base64"' not in plain
    assert read_data_block(packed) == read_data_block(plain) == page_data(plain)
    assert NASTY not in packed and packed.lower().count("</script") == 2


def test_repeated_text_is_stored_once():
    episodes = [make_episode(index, 0, True) for index in range(50)]
    data = json.loads(script_json(episode_payload(episodes, [{0, 1}] * 50)))
    assert data["strings"].count("You are the tool agent.") == 1
    assert len(data["strings"]) == 10  # 2 agents, 1 policy, 3 roles, 2 system prompts, 2 user prompts, 1 reply


def test_lone_surrogates_and_nan_still_give_parseable_json():
    text = script_json({"a": "half \ud83d pair", "b": "</script>"})
    assert json.loads(text) == {"a": "half \ud83d pair", "b": "</script>"}
    assert "<" not in text
    text.encode("utf-8")  # a lone surrogate would raise here


def test_a_missing_run_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="No run 'nope'"):
        write_report("nope", data_dir=str(tmp_path))


@pytest.mark.slow
def test_report_is_written_beside_the_run_with_its_plots(nasty_run, tmp_path):
    path = write_report("toy", data_dir=str(nasty_run.directory))
    assert path == nasty_run.folder / "report_toy.html"  # in runs/, beside the rollouts
    page = path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4 and len(page_data(page)["episodes"]) == 6
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from anywhere
    model = tmp_path / "model"
    model.mkdir()
    history = [{"loss": 2.0, "step": 1}, {"loss": 1.5, "step": 2}]
    (model / "training_summary.json").write_text(json.dumps({"final_train_loss": 1.25, "log_history": history}))
    output = write_report("toy", str(nasty_run.directory), str(tmp_path / "out" / "r.html"), str(model))
    page = output.read_text(encoding="utf-8")
    assert "final_train_loss" in page and "1.25" in page and page.count("data:image/png;base64,") == 5


@pytest.mark.slow
def test_ten_thousand_episodes_make_a_page_quickly(tmp_path):
    episodes = [make_episode(index // 2, index % 2, index % 3 == 0, rounds=1 + index % 3) for index in range(10_000)]
    for index, episode in enumerate(episodes):
        episode["turns"][0]["response"] = f"attempt {index}: " + "x" * 200
    files = write_run(tmp_path, "huge", episodes)
    started = time.monotonic()
    page = write_report(str(files.rollouts)).read_text(encoding="utf-8")
    assert time.monotonic() - started < 60
    assert len(page) < 5_000_000  # gzipped: the transcripts repeat
    assert len(read_data_block(page)["episodes"]) == 10_000
    assert "PAGE = 50;" in page  # the browser draws 50 at a time, not 10,000


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to parse JavaScript")
def test_the_browser_script_is_valid_javascript(nasty_run, tmp_path):
    (script,) = re.findall(r"<script>(.*?)</script>", page_of(nasty_run), re.DOTALL)
    (tmp_path / "page.js").write_text(script)
    result = subprocess.run(["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
