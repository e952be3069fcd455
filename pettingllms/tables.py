"""How a run's numbers look as tables: `RunSummary` -> titled sections of text cells -> `rich` tables.

The sections are plain data (`Section`), so the terminal (`print_summaries`) and the HTML report
(`pettingllms.report`) show the same rows. Several runs go side by side, one column per run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pettingllms.run_summary import RunSummary, Spread, rate, spread

SPREAD_COLUMNS = ["n", "min", "mean", "p50", "p95", "max"]


@dataclass
class Section:
    """One table: a title, its column names, and rows of (label, one text cell per column)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    note: str = ""

    def cell(self, label: str, column: str) -> str:
        for row_label, cells in self.rows:
            if row_label == label and column in self.columns:
                return cells[self.columns.index(column)]
        return "-"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def number(value: float | int | None, decimals: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}".rstrip("0")


def with_share(part: int, whole: int) -> str:
    """'139 (69.5%)': a count and its share of `whole`."""
    return f"{part:,} ({percent(rate(part, whole))})" if whole else f"{part:,}"


def spread_cells(values: Spread, decimals: int = 3) -> list[str]:
    return [number(values.count)] + [number(getattr(values, name), decimals) for name in SPREAD_COLUMNS[1:]]


def summary_sections(summary: RunSummary) -> list[Section]:
    """The tables of one run, in the order they are shown."""
    if summary.records_only:
        return _records_sections(summary)
    sections = [_overview(summary)]
    sections.append(
        Section(
            "Per agent",
            ["turns", "kept", "invalid rate", "episodes", "success rate"],
            [
                (
                    row.agent,
                    [number(row.turns), number(row.kept), percent(row.invalid_rate)]
                    + [number(row.episodes), percent(row.success_rate)],
                )
                for row in summary.per_agent
            ],
            "success: the agent's own success where the env judges it, else the episode's",
        )
    )
    sections.append(
        Section(
            "Per turn",
            ["agent", "episodes reaching it", "success rate", "invalid rate", "kept"],
            [
                (
                    str(row.turn_idx),
                    [", ".join(sorted(row.agents)), number(row.episodes), percent(row.success_rate)]
                    + [percent(row.invalid_rate), number(row.kept)],
                )
                for row in summary.per_turn
            ],
            "success rate: of the episodes that reached the turn",
        )
    )
    sections.append(_tasks(summary))
    sections.append(
        Section(
            "Rewards",
            SPREAD_COLUMNS,
            [
                ("episode return", spread_cells(spread(summary.episode_rewards))),
                ("turn reward", spread_cells(spread(summary.turn_rewards))),
            ],
        )
    )
    sections.append(_lengths(summary))
    sections.append(_counts("Removed by the filters", "turns", summary.removed, "nothing removed"))
    sections.append(_counts("Errors by kind", "episodes", summary.errors, "no errors"))
    return sections


def _overview(summary: RunSummary) -> Section:
    rows = [
        ("env", summary.env_name or "-"),
        ("source", summary.source),
        ("episodes", number(summary.episodes)),
        ("successful", with_share(summary.successful, summary.episodes)),
        ("failed", with_share(summary.failed, summary.episodes)),
        ("errors", with_share(summary.error_episodes, summary.episodes)),
        ("turns", number(summary.turns)),
        ("kept records", with_share(summary.kept_records, summary.turns)),
        ("invalid actions", with_share(summary.invalid_actions, summary.turns)),
        ("prompt / completion tokens", f"{summary.prompt_tokens:,} / {summary.completion_tokens:,}"),
        ("wall time", "-" if summary.wall_time_s is None else f"{summary.wall_time_s:,.1f} s"),
    ]
    return Section("Run", ["value"], [(label, [value]) for label, value in rows])


def _tasks(summary: RunSummary) -> Section:
    tasks = summary.tasks
    note = (
        "one sample per task: 'all' are the successes, 'none' the failures"
        if tasks.max_samples <= 1
        else "tasks by how many of their samples succeeded (rejection sampling)"
    )
    rows = [
        ("tasks", number(tasks.tasks)),
        ("samples per task (most)", number(tasks.max_samples)),
        ("all samples succeeded", with_share(tasks.all_succeeded, tasks.tasks)),
        ("some succeeded", with_share(tasks.some_succeeded, tasks.tasks)),
        ("none succeeded", with_share(tasks.none_succeeded, tasks.tasks)),
    ]
    return Section("Per task", ["value"], [(label, [value]) for label, value in rows], note)


def _lengths(summary: RunSummary) -> Section:
    rows = [("kept", spread_cells(spread(summary.kept_lengths), decimals=1))]
    if not summary.records_only:
        rows.append(("dropped", spread_cells(spread(summary.dropped_lengths), decimals=1)))
    return Section(f"Record length ({summary.length_unit})", SPREAD_COLUMNS, rows, "prompt + reply of each turn")


def _counts(title: str, column: str, counts: dict[str, int], empty: str) -> Section:
    rows = [(name, [number(count)]) for name, count in counts.items()] or [(empty, ["0"])]
    return Section(title, [column], rows)


def _records_sections(summary: RunSummary) -> list[Section]:
    overview = Section(
        "Run",
        ["value"],
        [
            ("source", [summary.source]),
            ("kept records", [number(summary.kept_records)]),
            ("episodes with kept records", [number(summary.episodes)]),
        ],
        "a records file alone: only the kept records are known",
    )
    agents = Section("Per agent", ["kept"], [(row.agent, [number(row.kept)]) for row in summary.per_agent])
    return [overview, agents, _lengths(summary)]


def merge_sections(runs: list[tuple[str, list[Section]]]) -> list[tuple[Section, list[str]]]:
    """Side by side: for each title, one section whose columns are the runs.

    A one-column section keeps its row labels; a wider one gets a row per (label, column),
    labelled 'label · column'. Returns each merged section with the labels that start a group.
    """
    # The titles in the order of the run with the most sections: a records-only run has fewer.
    longest = max((sections for _, sections in runs), key=len)
    titles = list(dict.fromkeys([s.title for s in longest] + [s.title for _, sections in runs for s in sections]))
    merged = []
    for title in titles:
        found = [next((s for s in sections if s.title == title), None) for _, sections in runs]
        present = [section for section in found if section is not None]
        fullest_first = sorted(present, key=lambda section: -len(section.rows) * len(section.columns))
        columns = list(dict.fromkeys(column for section in fullest_first for column in section.columns))
        labels = list(dict.fromkeys(label for section in fullest_first for label, _ in section.rows))
        wide = len(columns) > 1
        notes = "; ".join(dict.fromkeys(s.note for s in present if s.note))
        section = Section(title, [name for name, _ in runs], note=notes)
        starts = []
        for label in labels:
            starts.append(f"{label} · {columns[0]}" if wide else label)
            for column in columns:
                cells = [s.cell(label, column) if s is not None else "-" for s in found]
                section.rows.append((f"{label} · {column}" if wide else label, cells))
        merged.append((section, starts))
    return merged


def print_summaries(summaries: list[RunSummary], console=None) -> None:
    """Print the tables of one run, or of several side by side (one column per run)."""
    from rich.console import Console

    # Piped into a file or a pager, rich would assume 80 columns and squeeze the side-by-side tables.
    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    for table in rich_tables(summaries):
        console.print(table)


def rich_tables(summaries: list[RunSummary]) -> list:
    from rich.table import Table

    tables = []
    if len(summaries) == 1:
        for section in summary_sections(summaries[0]):
            table = Table(title=section.title, caption=section.note or None, title_justify="left")
            table.add_column("", style="bold")
            for column in section.columns:
                table.add_column(column, justify="left" if column == "value" else "right")
            for label, cells in section.rows:
                table.add_row(label, *cells)
            tables.append(table)
        return tables
    runs = [(summary.run_name, summary_sections(summary)) for summary in summaries]
    for section, starts in merge_sections(runs):
        table = Table(title=section.title, caption=section.note or None, title_justify="left")
        table.add_column("", style="bold")
        for column in section.columns:
            table.add_column(column, justify="right")
        for index, (label, cells) in enumerate(section.rows):
            is_last = index + 1 == len(section.rows) or section.rows[index + 1][0] in starts
            table.add_row(label, *cells, end_section=is_last and len(starts) < len(section.rows))
        tables.append(table)
    return tables
