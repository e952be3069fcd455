"""The PNGs of a run: success per agent and per turn, rewards, record lengths, loss, before/after.

matplotlib draws with its Agg backend (files only, no display). Each function draws one figure
from numbers already computed (`RunSummary`, `LossCurve`) and returns the file it wrote;
`write_plots` writes every plot the available data allows into one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pettingllms.exceptions import UserError
from pettingllms.run_summary import RunSummary
from pettingllms.training_log import LossCurve

KEPT_COLOR, DROPPED_COLOR, BAR_COLOR = "#2b8a3e", "#c92a2a", "#1c7ed6"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: a server or CI has none
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, output: Path) -> Path:
    """Write `figure` to `output`; a failed write (a full disk) is one UserError line, and leaves no half PNG."""
    figure.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output, dpi=100)
    except OSError as error:
        output.unlink(missing_ok=True)
        raise UserError(f"Cannot write the plot {output}: {error.strerror or error}.") from None
    finally:
        _pyplot().close(figure)
    return output


def _bars(labels: list[str], rates: list[float | None], title: str, xlabel: str, output: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.5))
    values = [100 * (value or 0.0) for value in rates]
    bars = axis.bar(labels, values, color=BAR_COLOR)
    axis.bar_label(bars, labels=["-" if value is None else f"{100 * value:.0f}%" for value in rates], fontsize=8)
    axis.set_ylim(0, 110)
    axis.set_ylabel("success rate (%)")
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    return _save(figure, output)


def plot_success_per_agent(summary: RunSummary, output: Path) -> Path:
    rows = summary.per_agent
    return _bars([row.agent for row in rows], [row.success_rate for row in rows], "Success per agent", "agent", output)


def plot_success_per_turn(summary: RunSummary, output: Path) -> Path:
    """Success rate of the episodes that reached each turn, with how many reached it on a second axis."""
    rows = summary.per_turn
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(rows) + 2), 4.0))
    indexes = [row.turn_idx for row in rows]
    bars = axis.bar(indexes, [100 * (row.success_rate or 0.0) for row in rows], color=BAR_COLOR, label="success rate")
    axis.bar_label(bars, labels=[f"{100 * (row.success_rate or 0.0):.0f}%" for row in rows], fontsize=8)
    axis.set_ylim(0, 110)
    axis.set_ylabel("success rate (%)")
    axis.set_xlabel("turn index")
    axis.set_xticks(indexes)
    reached = axis.twinx()
    reached.plot(indexes, [row.episodes for row in rows], color="black", marker="o", label="episodes reaching it")
    reached.set_ylabel("episodes reaching the turn")
    reached.set_ylim(bottom=0)
    axis.set_title("Success per turn")
    handles = axis.get_legend_handles_labels()[0] + reached.get_legend_handles_labels()[0]
    axis.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    return _save(figure, output)


def plot_rewards(summary: RunSummary, output: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(summary.episode_rewards, bins=30, color=BAR_COLOR)
    axis.set_xlabel("episode return (sum of turn rewards)")
    axis.set_ylabel("episodes")
    axis.set_title("Rewards")
    return _save(figure, output)


def plot_lengths(kept: list[int], dropped: list[int], unit: str, output: Path) -> Path:
    """Histograms of the record lengths of kept and dropped turns, on shared bins."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    values = kept + dropped
    bins = 30 if not values or min(values) == max(values) else list(_edges(min(values), max(values), 30))
    if kept:
        axis.hist(kept, bins=bins, alpha=0.6, color=KEPT_COLOR, label=f"kept ({len(kept):,})")
    if dropped:
        axis.hist(dropped, bins=bins, alpha=0.6, color=DROPPED_COLOR, label=f"dropped ({len(dropped):,})")
    axis.set_xlabel(f"{unit} per record (prompt + reply)")
    axis.set_ylabel("turns")
    axis.set_title("Record lengths")
    if kept or dropped:
        axis.legend(fontsize=8)
    return _save(figure, output)


def _edges(low: float, high: float, count: int) -> list[float]:
    return [low + (high - low) * index / count for index in range(count + 1)]


def plot_loss(curves: list[LossCurve], output: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for curve in curves:
        prefix = f"{curve.label}: " if len(curves) > 1 else ""
        axis.plot(curve.steps, curve.losses, label=f"{prefix}train loss")
        if curve.eval_losses:
            axis.plot(curve.eval_steps, curve.eval_losses, marker="o", label=f"{prefix}eval loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title("Training loss")
    axis.legend(fontsize=8)
    return _save(figure, output)


def plot_before_after(labels: list[str], evaluations: list[dict[str, Any]], output: Path) -> Path:
    """Success rates side by side, with their 95 % intervals when the summaries give them."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    rates = [100 * float(summary["success_rate"]) for summary in evaluations]
    intervals = [summary.get("success_interval_95") or [summary["success_rate"]] * 2 for summary in evaluations]
    errors = [
        [max(0.0, rate - 100 * low) for rate, (low, _) in zip(rates, intervals)],
        [max(0.0, 100 * high - rate) for rate, (_, high) in zip(rates, intervals)],
    ]
    names = [f"{label}\n{rate:.0f}%" for label, rate in zip(labels, rates)]  # not on the bar: the interval is
    axis.bar(names, rates, yerr=errors, capsize=6, color=[BAR_COLOR, KEPT_COLOR][: len(rates)])
    axis.set_ylim(0, 110)
    axis.set_ylabel("success rate (%)")
    axis.set_title("Success before / after training")
    return _save(figure, output)


def write_plots(
    summary: RunSummary,
    folder: Path,
    curves: list[LossCurve] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Every plot the data allows, as `<name>.png` in `folder`: {name: path}.

    `before` / `after`: evaluation summaries (`success_rate`, optional `success_interval_95`); with
    `after` alone, the run's own success rate stands beside it.
    """
    written = {}
    if not summary.records_only:
        written["success_per_agent"] = plot_success_per_agent(summary, folder / "success_per_agent.png")
        written["success_per_turn"] = plot_success_per_turn(summary, folder / "success_per_turn.png")
        written["rewards"] = plot_rewards(summary, folder / "rewards.png")
    written["lengths"] = plot_lengths(
        summary.kept_lengths, summary.dropped_lengths, summary.length_unit, folder / "lengths.png"
    )
    if curves and any(curve.losses for curve in curves):
        written["training_loss"] = plot_loss(curves, folder / "training_loss.png")
    if after is not None and before is not None:
        written["before_after"] = plot_before_after(["before", "after"], [before, after], folder / "before_after.png")
    elif after is not None and summary.success_rate is not None:
        collected = {"success_rate": summary.success_rate}
        written["before_after"] = plot_before_after(
            ["this run", "evaluation"], [collected, after], folder / "before_after.png"
        )
    return written
