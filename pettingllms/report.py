"""`pettingllms report RUN`: one self-contained HTML page about a run, to open in any browser.

The page holds the run's settings, the tables of `pettingllms stats`, the plots (PNG data URIs)
and an episode browser: every episode's transcript, filtered by outcome, agent, task or text.
Nothing is fetched: no network, no server, no external script or style.

The episodes travel as compact JSON in a `<script type="application/json">` block (every message
and reply stored once in a string table: system prompts and repeated replies cost nothing), and a
few lines of JavaScript draw one page of 50 at a time, each transcript only when it is opened, so
a run of 10,000 episodes opens as fast as one of 10. Model text is only ever set as `textContent`.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError, UserError
from pettingllms.records import Episode, episode_succeeded
from pettingllms.report_page import page_html
from pettingllms.stats import LoadedRun, load_run, plots_folder, resolve_run
from pettingllms.tables import Section, summary_sections
from pettingllms.training_log import TrainingResults, read_training_results

EPISODE_FIELDS = [
    "episode_id", "task_id", "env_idx", "rollout_idx", "seed", "outcome", "error_kind", "error_message",
    "return", "wall_time_s", "kept", "terminated", "truncated", "turns",
]  # fmt: skip
"""The columns of an episode row in the page's JSON; `kept` counts its kept turns."""
TURN_FIELDS = [
    "turn_idx", "agent", "policy", "valid", "parse_error", "reward", "kept", "response", "messages",
    "details", "prompt_tokens", "completion_tokens", "finish_reason",
]  # fmt: skip
"""The columns of a turn row; `agent`, `policy`, `response` and each message's role and content are
indexes into the string table; `messages` is a list of [role, content]."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
COMPRESS_ABOVE = 4_000_000
"""Episode JSON longer than this is gzipped into the page: a browser parses 50 MB of script text in
seconds, the 2 MB it compresses to (transcripts repeat a lot) at once. Smaller runs stay plain JSON."""


def write_report(
    target: str, data_dir: str | None = None, output: str | None = None, training_dir: str | None = None
) -> Path:
    """Write the report of run `target` (a run name, a rollouts or records file); return its path."""
    run = load_run(resolve_run(target, data_dir))
    results = read_training_results(run.files, run.config, training_dir)
    from pettingllms.plots import write_plots

    plots = write_plots(run.summary, plots_folder(run), results.curves, results.before, results.after)
    images = {name: path.read_bytes() for name, path in plots.items()}
    page = render_report(run, results, images)
    path = Path(output) if output else report_path(run)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8", errors="replace")  # a stray lone surrogate becomes '?'
    except OSError as error:
        raise UserError(f"Cannot write the report to {path}: {error.strerror or error}.") from None
    return path


def report_path(run: LoadedRun) -> Path:
    """Where the report of a run goes by default: `report_<run>.html` beside its rollouts (in `runs/`)."""
    if run.files is None:
        return run.path.parent / f"report_{run.path.stem}.html"
    return run.files.folder / f"report_{run.files.run_name}.html"


# ---------------------------------------------------------------- the page (pure: data in, text out)


def render_report(
    run: LoadedRun, results: TrainingResults, images: dict[str, bytes], compress_above: int = COMPRESS_ABOVE
) -> str:
    """The whole HTML page; episode data longer than `compress_above` characters is gzipped."""
    summary = run.summary
    title = f"pettingllms report: {summary.run_name}"
    parts = [
        f"<h1>{_text(title)}</h1>",
        f"<p class='muted'>{_text(summary.source)} · written {datetime.now():%Y-%m-%d %H:%M}</p>",
        "<nav><a href='#settings'>settings</a> · <a href='#tables'>tables</a> · "
        "<a href='#plots'>plots</a> · <a href='#browser'>episodes</a></nav>",
        "<h2 id='settings'>Settings</h2>",
        settings_html(run.config),
        "<h2 id='tables'>Tables</h2>",
        "<div class='tables'>" + "".join(section_html(section) for section in summary_sections(summary)) + "</div>",
        training_html(results),
        "<h2 id='plots'>Plots</h2>",
        plots_html(images),
        "<h2 id='browser'>Episodes</h2>",
    ]
    return page_html(
        _text(title), "\n".join(parts), data_block(episode_payload(run.episodes, run.kept), compress_above)
    )


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def settings_html(config: dict[str, Any] | None) -> str:
    """What defines the data (`identity`) as a table, and the whole config folded under it."""
    if not config:
        return "<p class='muted'>No _config.json beside the run: its settings are unknown.</p>"
    return (
        key_values(flatten(config.get("identity", {})))
        + "<details><summary>every setting of the run</summary>"
        + key_values(flatten(config.get("config", {})))
        + "</details>"
    )


def key_values(values: dict[str, Any]) -> str:
    """A compact grid of 'key  value' pairs."""
    items = "".join(
        f"<div><span>{_text(key)}</span><span>{_text(_value(value))}</span></div>" for key, value in values.items()
    )
    return f"<div class='kv'>{items}</div>"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': leaf} for a nested dict; empty dicts and lists stay leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return value if isinstance(value, str) else json.dumps(value)


def section_html(section: Section) -> str:
    head = "".join(f"<th>{_text(column)}</th>" for column in section.columns)
    rows = "".join(
        f"<tr><th>{_text(label)}</th>" + "".join(f"<td>{_text(cell)}</td>" for cell in cells) + "</tr>"
        for label, cells in section.rows
    )
    note = f"<caption class='note'>{_text(section.note)}</caption>" if section.note else ""
    return (
        f"<div class='section'><h3>{_text(section.title)}</h3>"
        f"<table{' class=values' if section.columns == ['value'] else ''}>{note}"
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def training_html(results: TrainingResults) -> str:
    """The training that used the run (losses, steps) and its evaluations, when they are known."""
    rows: dict[str, Any] = {}
    if results.folder is not None:
        rows["folder"] = str(results.folder)
        for curve in results.curves:
            prefix = f"{curve.label}: " if len(results.curves) > 1 else ""
            for key in ("model", "train_samples", "global_steps", "epochs", "first_train_loss", "final_train_loss"):
                rows[prefix + key] = curve.summary.get(key)
            rows[prefix + "eval_loss"] = curve.summary.get("eval_loss")
    for label, evaluation in (("before training", results.before), ("after training", results.after)):
        if evaluation is not None:
            low, high = evaluation.get("success_interval_95") or (None, None)
            interval = f" (95% interval {low:.2f}-{high:.2f})" if low is not None else ""
            rows[f"success {label}"] = (
                f"{evaluation['success_rate']:.2f}{interval}, {evaluation.get('episodes')} episodes"
            )
    if not rows:
        return ""
    return "<h2 id='training'>Training</h2>" + key_values(rows)


def plots_html(images: dict[str, bytes]) -> str:
    figures = "".join(
        f"<figure><img alt='{_text(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{_text(name.replace('_', ' '))}</figcaption></figure>"
        for name, data in images.items()
    )
    return f"<div class='plots'>{figures}</div>"


def episode_payload(episodes: list[Episode], kept: list[set[int]]) -> dict[str, Any]:
    """The episodes as compact rows (`EPISODE_FIELDS`, `TURN_FIELDS`) over one table of strings, sorted by task."""
    strings: list[str] = []
    index: dict[str, int] = {}

    def intern(text: str) -> int:
        if text not in index:
            index[text] = len(strings)
            strings.append(text)
        return index[text]

    rows = []
    pairs = sorted(zip(episodes, kept), key=lambda pair: (pair[0]["env_idx"], pair[0]["rollout_idx"]))
    for episode, kept_here in pairs:
        error = episode.get("error") or {}
        outcome = "error" if error else "success" if episode_succeeded(episode) else "failed"
        turns = [
            [
                turn["turn_idx"],
                intern(turn["agent"]),
                intern(turn["policy_name"]),
                int(turn["valid"]),
                turn.get("parse_error"),
                _plain(turn.get("reward")),
                int(turn["turn_idx"] in kept_here),
                intern(turn["response"]),
                [[intern(message["role"]), intern(message["content"])] for message in turn["messages"]],
                _plain(turn.get("details")) or None,
                turn.get("prompt_tokens") or 0,
                turn.get("completion_tokens") or 0,
                turn.get("finish_reason"),
            ]
            for turn in episode["turns"]
        ]
        rows.append(
            [
                episode["episode_id"],
                episode.get("task_id"),
                episode["env_idx"],
                episode["rollout_idx"],
                episode["seed"],
                outcome,
                error.get("kind"),
                error.get("message"),
                _plain(round(sum(turn.get("reward") or 0.0 for turn in episode["turns"]), 6)),
                episode.get("wall_time_s"),
                len(kept_here),
                bool(episode.get("terminated")),
                bool(episode.get("truncated")),
                turns,
            ]
        )
    agents = sorted({turn["agent"] for episode in episodes for turn in episode["turns"]})
    return {
        "episode_fields": EPISODE_FIELDS,
        "turn_fields": TURN_FIELDS,
        "agents": agents,
        "strings": strings,
        "episodes": rows,
    }


def _plain(value: Any) -> Any:
    """`value` with NaN and infinities as strings: the rollouts may hold them, JSON.parse refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def data_block(payload: Any, compress_above: int = COMPRESS_ABOVE) -> str:
    """The <script> element that carries the episodes: JSON, or a JSON string of gzipped JSON in base64."""
    text = script_json(payload)
    if len(text) <= compress_above:
        return f'<script id="episode-data" type="application/json">{text}</script>'
    packed = base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")
    return f'<script id="episode-data" type="application/json" data-encoding="gzip+base64">"{packed}"</script>'


def read_data_block(page: str) -> Any:
    """The episodes a report page carries (what its script reads): for tests and scripts."""
    match = re.search(
        r'<script id="episode-data" type="application/json"( data-encoding="gzip\+base64")?>(.*?)</script>',
        page,
        re.DOTALL,
    )
    if match is None:
        raise DataError("Not a pettingllms report: no episode-data block.")
    content = json.loads(match.group(2))
    return json.loads(gzip.decompress(base64.b64decode(content))) if match.group(1) else content


def script_json(payload: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no '<', '>' or '&' can end the block.

    They only occur inside JSON strings, where their \\u escapes mean the same characters; so do
    lone surrogates (a model can emit half of a pair), which would not survive UTF-8 encoding.
    """
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
