"""What a user sees while a command runs: info lines, one progress display, and quiet libraries.

- `info(message)`: a line on stdout, from the main process only, unless `--quiet`.
- `Progress`: a tqdm bar on a terminal; in a log file (stdout/stderr not a terminal), a plain
  line every few seconds instead of carriage-return updates; nothing with `--quiet`.
- `quiet_libraries()`: silences what third-party libraries print that a user cannot act on
  (deprecation warnings, weight-loading and dataset-mapping bars); `-v/--verbose` keeps them.

The command line sets `PETTINGLLMS_QUIET` / `PETTINGLLMS_VERBOSE`, so processes it starts
(torchrun ranks, accelerate) behave the same.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

LINE_EVERY_S = 10.0
"""How often a progress line is written when the output is a log file."""


def is_quiet() -> bool:
    return os.environ.get("PETTINGLLMS_QUIET") == "1"


def is_verbose() -> bool:
    return os.environ.get("PETTINGLLMS_VERBOSE") == "1"


def is_main_process() -> bool:
    # Set by torchrun / accelerate; absent in a single process.
    return int(os.environ.get("RANK", "0")) == 0


def info(message: str) -> None:
    """A line for the user: once (main process), and not under --quiet."""
    if is_main_process() and not is_quiet():
        print(message, flush=True)


def quiet_libraries() -> None:
    """Silence third-party noise a user cannot act on, unless --verbose asked for everything."""
    if is_verbose():
        return
    # Environment first: it reaches libraries imported later and processes started from here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        for module in ("transformers", "trl", "peft", "accelerate", "datasets", "torch"):
            warnings.filterwarnings("ignore", category=category, module=module)
    if "transformers" in sys.modules:  # already imported: its settings read the environment once
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


class Progress:
    """Progress of `total` units: a bar on a terminal, a line every LINE_EVERY_S seconds in a log."""

    def __init__(self, total: int | None, description: str, initial: int = 0, unit: str = "it"):
        self.total, self.description, self.count = total, description, initial
        self.enabled = not is_quiet() and is_main_process() and os.environ.get("PETTINGLLMS_PROGRESS", "1") != "0"
        self.postfix: dict[str, Any] = {}
        self.bar = None
        self.last_line = time.monotonic()
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True)

    def update(self, count: int = 1, **postfix: Any) -> None:
        self.count += count
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(count)
        elif self.enabled and time.monotonic() - self.last_line >= LINE_EVERY_S:
            self.write_line()

    def write_line(self) -> None:
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        details = ", ".join(f"{key} {value}" for key, value in self.postfix.items())
        print(f"{self.description}: {done}" + (f" ({details})" if details else ""), file=sys.stderr, flush=True)
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.count:
            self.write_line()


def print_table(rows: list[tuple[str, ...]], title: str | None = None) -> None:
    """Rows as aligned columns on stdout (the first row is the header); `title` above them."""
    if title:
        print(f"\n{title}")
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
