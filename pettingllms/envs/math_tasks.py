"""Math tasks: a seeded problem generator, a file loader, answer extraction and verification.

The environment lives in `math.py`; this module holds its task rules as plain functions.

- `generate_problem(index, split)`: problem `index` of the built-in generator (arithmetic,
  fractions, linear equations, counting, remainders, gcd/lcm, series), each with an exact
  answer, a short worked solution and a Python program that prints the answer. The same
  index and split always give the same problem; "train" and "test" seeds never overlap.
- `load_math_tasks(path)`: Parquet/JSONL exports of GSM8K, MATH, AIME... with a `question`
  (or `problem`) column and an `answer` or `solution` column (the answer is taken from a
  `\\boxed{}` or a GSM8K `#### 72` tail when the column holds a whole solution).
- `extract_boxed(text)`: the content of the last `\\boxed{...}` in a reply.
- `answers_match(gold, answer)`: math-verify's equivalence (`0.5` == `\\frac{1}{2}`).

Why verification runs in a helper process: math-verify bounds its work with `signal.alarm`,
which only works in the main thread, and the runner steps environments from worker threads.
Without the alarm a reply like `\\boxed{10^{10^{10}}}` makes sympy compute forever. So one
long-lived helper process (its own main thread, so the alarm works there) does the parsing
and comparing, and the caller kills and replaces it when it overruns a deadline.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import random
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from pettingllms.envs.code_tasks import cached_load, read_rows
from pettingllms.exceptions import DataError

TEST_SEED_OFFSET = 1_000_000
"""Problem i of split "test" uses seed i + TEST_SEED_OFFSET, so the splits share no seed below that many problems."""


@dataclass(frozen=True)
class MathTask:
    task_id: str
    question: str
    answer: str
    """The exact answer as LaTeX or plain text (`\\frac{3}{4}`, `72`, `2\\sqrt{3}`)."""
    solution: str | None = None
    """A worked solution ending in `\\boxed{answer}` (the expert's reasoning reply)."""
    program: str | None = None
    """A Python program that prints the answer (the expert's tool reply)."""


# -- the built-in generator ---------------------------------------------------------------
# Only `random.random()` is used: Python guarantees its stream for a seed across versions,
# unlike randint/choice, so a problem index means the same problem everywhere.


class _Draw:
    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def int(self, low: int, high: int) -> int:
        """Uniform in [low, high]."""
        return low + min(int(self._rng.random() * (high - low + 1)), high - low)

    def nonzero(self, low: int, high: int) -> int:
        value = self.int(low, high - 1)
        return value + 1 if value >= 0 else value

    def pick(self, options):
        return options[self.int(0, len(options) - 1)]


def format_number(value: Fraction | int) -> str:
    """An exact rational as LaTeX: `7`, `-\\frac{3}{4}`."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _arithmetic(draw: _Draw):
    a, b, c = draw.int(2, 99), draw.int(2, 99), draw.int(2, 30)
    op1, op2 = draw.pick(["+", "-", "*"]), draw.pick(["+", "-", "*"])
    expression = f"{a} {op1} {b} {op2} {c}"
    shown = expression.replace("*", "\\times")
    value = eval(expression)  # our own expression of small integer literals
    return (
        f"Compute ${shown}$.",
        value,
        f"Following the order of operations, ${shown} = {value}$.",
        f"print({expression})",
    )


def _fractions(draw: _Draw):
    a, b = draw.int(1, 9), draw.int(2, 12)
    c, d = draw.int(1, 9), draw.int(2, 12)
    op = draw.pick(["+", "-", "*"])
    value = {
        "+": Fraction(a, b) + Fraction(c, d),
        "-": Fraction(a, b) - Fraction(c, d),
        "*": Fraction(a, b) * Fraction(c, d),
    }[op]
    sign = "\\times" if op == "*" else op
    shown = f"\\frac{{{a}}}{{{b}}} {sign} \\frac{{{c}}}{{{d}}}"
    return (
        f"Compute ${shown}$ and write the result as a fraction in lowest terms.",
        value,
        f"Bringing the fractions together and reducing, ${shown} = {format_number(value)}$.",
        f"from fractions import Fraction\nprint(Fraction({a}, {b}) {op} Fraction({c}, {d}))",
    )


def _linear_equation(draw: _Draw):
    x, a, b = draw.int(-20, 20), draw.nonzero(-9, 9), draw.int(-50, 50)
    c = a * x + b
    left = f"{a}x" if a not in (1, -1) else ("x" if a == 1 else "-x")
    left += f" + {b}" if b >= 0 else f" - {-b}"
    return (
        f"Solve for $x$: ${left} = {c}$.",
        x,
        f"Moving the constant to the right gives ${a}x = {c - b}$, so $x = {x}$.",
        f"from fractions import Fraction\nprint(Fraction({c} - ({b}), {a}))",
    )


def _counting(draw: _Draw):
    n = draw.int(5, 15)
    k = draw.int(2, min(n - 1, 6))
    if draw.int(0, 1):
        value = math.comb(n, k)
        return (
            f"In how many ways can a committee of {k} people be chosen from {n} people?",
            value,
            f"The order does not matter, so the count is $\\binom{{{n}}}{{{k}}} = {value}$.",
            f"import math\nprint(math.comb({n}, {k}))",
        )
    value = math.perm(n, k)
    return (
        f"{n} runners race. In how many ways can the first {k} places be filled (no ties)?",
        value,
        f"The order matters, so the count is ${n}!/{n - k}! = {value}$.",
        f"import math\nprint(math.perm({n}, {k}))",
    )


def _remainder(draw: _Draw):
    base, exponent, modulus = draw.int(2, 30), draw.int(2, 40), draw.int(3, 23)
    value = pow(base, exponent, modulus)
    return (
        f"What is the remainder when ${base}^{{{exponent}}}$ is divided by ${modulus}$?",
        value,
        f"Reducing modulo {modulus} at each multiplication, ${base}^{{{exponent}}} \\equiv {value} "
        f"\\pmod{{{modulus}}}$.",
        f"print(pow({base}, {exponent}, {modulus}))",
    )


def _gcd_lcm(draw: _Draw):
    common = draw.int(2, 12)
    a, b = common * draw.int(2, 15), common * draw.int(2, 15)
    if draw.int(0, 1):
        value = math.gcd(a, b)
        return (
            f"What is the greatest common divisor of {a} and {b}?",
            value,
            f"By the Euclidean algorithm, $\\gcd({a}, {b}) = {value}$.",
            f"import math\nprint(math.gcd({a}, {b}))",
        )
    value = math.lcm(a, b)
    return (
        f"What is the least common multiple of {a} and {b}?",
        value,
        f"$\\operatorname{{lcm}}({a}, {b}) = {a} \\cdot {b} / \\gcd({a}, {b}) = {value}$.",
        f"import math\nprint(math.lcm({a}, {b}))",
    )


def _series(draw: _Draw):
    first, step, count = draw.int(-10, 20), draw.int(1, 9), draw.int(5, 40)
    last = first + step * (count - 1)
    value = count * (first + last) // 2
    return (
        f"What is the sum of the arithmetic sequence {first}, {first + step}, {first + 2 * step}, ..., {last}?",
        value,
        f"It has {count} terms, so the sum is ${count} \\cdot ({first} + {last}) / 2 = {value}$.",
        f"print(sum(range({first}, {last + 1}, {step})))",
    )


PROBLEM_KINDS = (_arithmetic, _fractions, _linear_equation, _counting, _remainder, _gcd_lcm, _series)


def generate_problem(index: int, split: str = "train") -> MathTask:
    """Problem `index` of the built-in generator for `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    seed = index + (TEST_SEED_OFFSET if split == "test" else 0)
    draw = _Draw(seed)
    question, value, steps, program = draw.pick(PROBLEM_KINDS)(draw)
    answer = format_number(value)
    return MathTask(
        f"math-gen-{split}-{index}", question, answer, f"{steps}\n\nThe answer is $\\boxed{{{answer}}}$.", program
    )


# -- files ---------------------------------------------------------------------------------


def load_math_tasks(path: str) -> list[MathTask]:
    """The tasks in a Parquet/JSONL file with `question` (or `problem`) and `answer` or `solution`."""
    return cached_load(path, _read_math_file)


def _read_math_file(path: str) -> list[MathTask]:
    rows, columns = read_rows(path)
    question_column = "question" if "question" in columns else "problem" if "problem" in columns else None
    missing = [] if question_column else ["'question'"]
    if "answer" not in columns and "solution" not in columns:
        missing.append("'answer' or 'solution'")
    if missing:
        raise DataError(
            f"Dataset {path} is missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(sorted(columns)) or 'none'}); a math file needs 'question' "
            f"(or 'problem') and 'answer' or 'solution'."
        )
    stem = Path(path).name.split(".")[0]
    tasks = []
    for number, row in enumerate(rows):
        solution = row.get("solution")
        solution = str(solution) if solution not in (None, "") else None
        if solution is None and ("####" in str(row.get("answer")) or "\\boxed" in str(row.get("answer"))):
            solution = str(row["answer"])  # GSM8K keeps its worked solution in the answer column
        answer = _answer_of(row.get("answer")) or _answer_of(solution, whole_text=False)
        if not answer:
            raise DataError(
                f"Dataset {path}, row {number}: no answer found (an 'answer' value, or a "
                f"'solution' with \\boxed{{...}} or a '#### answer' line)."
            )
        tasks.append(MathTask(f"{stem}/{number}", str(row[question_column]), answer, solution))
    return tasks


def _answer_of(value, whole_text: bool = True) -> str | None:
    """The answer in an answer/solution cell: its GSM8K `#### 72` tail, its last \\boxed{}, or
    (`whole_text`, for an answer column) the cell itself."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    elif "\\boxed" in text or "\\fbox" in text:
        text = extract_boxed(text) or ""
    elif not whole_text:
        return None
    return text.strip().strip("$").strip() or None


# -- replies -------------------------------------------------------------------------------


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced; None if none."""
    closing = _matching_braces(text)
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))):
        end = closing.get(match.end() - 1)
        if end is not None and text[match.end() : end].strip():
            return text[match.end() : end].strip()
    return None


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each `{` -> position of its `}`, in one pass (replies may be long and hostile)."""
    opened, pairs = [], {}
    for position, char in enumerate(text):
        if char == "{":
            opened.append(position)
        elif char == "}" and opened:
            pairs[opened.pop()] = position
    return pairs


def wrong_answer(answer: str) -> str:
    """A plausible wrong answer (the right one plus 1), for the expert's deliberate mistakes."""
    number = _as_fraction(answer)
    if number is not None:
        return format_number(number + 1)
    return f"{answer} + 1"


def _as_fraction(text: str) -> Fraction | None:
    match = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", text.replace(" ", ""))
    if match and int(match.group(3)):
        return Fraction(int(match.group(2)), int(match.group(3))) * (-1 if match.group(1) else 1)
    try:
        return Fraction(text.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


# -- verification --------------------------------------------------------------------------

MAX_ANSWER_CHARS = 1000
"""Longer answers are wrong without asking math-verify (no real answer is that long)."""


@functools.lru_cache(maxsize=8192)
def answers_match(gold: str, answer: str, timeout_s: float = 10.0) -> bool:
    """Whether `answer` equals `gold` under math-verify. Never raises; False on any trouble."""
    gold, answer = str(gold).strip(), str(answer).strip()
    if not gold or not answer or len(answer) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    number = _as_fraction(gold)
    if gold == answer or (number is not None and number == _as_fraction(answer)):
        return True  # plainly equal numbers; anything else may still be equal, and math-verify decides
    return _VERIFIER.ask(gold, answer, timeout_s)


def verify_here(gold: str, answer: str, timeout_s: int = 5) -> bool:
    """math-verify in this process, bounded by its signal alarm (main thread only)."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        parsed_gold = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout_s)
        parsed_answer = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout_s)
        return bool(parsed_gold and parsed_answer and verify(parsed_gold, parsed_answer, timeout_seconds=timeout_s))
    except (Exception, TimeoutException):
        return False


def serve_verifier() -> None:
    """The helper process: one JSON `[gold, answer]` per stdin line, `1` or `0` per stdout line."""
    import logging
    import resource

    logging.disable(logging.CRITICAL)
    limit = 2 << 30  # huge integers raise MemoryError instead of swapping the machine
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    verify_here("1", "1")  # import sympy before the first real request
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            gold, answer = json.loads(line)
            matched = verify_here(str(gold), str(answer))
        except (Exception, MemoryError):
            matched = False
        sys.stdout.write("1\n" if matched else "0\n")
        sys.stdout.flush()


class _VerifierProcess:
    """The caller's side of the helper: one request at a time; kill and restart on overrun."""

    STARTUP_S = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner = os.getpid()
        atexit.register(self.close)

    def ask(self, gold: str, answer: str, timeout_s: float) -> bool:
        with self._lock:
            try:
                process = self._running()
                process.stdin.write((json.dumps([gold, answer]) + "\n").encode())
                process.stdin.flush()
                return self._read_line(process, timeout_s) == b"1"
            except (OSError, TimeoutError, ValueError):
                self.close()
                return False

    def _running(self) -> subprocess.Popen:
        if self._owner != os.getpid():  # a forked copy of us must not share the parent's pipes
            self._process, self._owner = None, os.getpid()
        if self._process is None or self._process.poll() is not None:
            paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]  # even if not installed
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from pettingllms.envs.math_tasks import serve_verifier; serve_verifier()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                env=env,
            )
            if self._read_line(self._process, self.STARTUP_S) != b"ready":
                raise OSError("the math-verify helper did not start")
        return self._process

    @staticmethod
    def _read_line(process: subprocess.Popen, timeout_s: float) -> bytes:
        deadline, received = time.monotonic() + timeout_s, b""
        while not received.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                raise TimeoutError("math-verify took too long")
            chunk = os.read(process.stdout.fileno(), 64)
            if not chunk:
                raise OSError("the math-verify helper exited")
            received += chunk
        return received.strip()

    def close(self) -> None:
        if self._process is not None and self._owner == os.getpid():
            self._process.kill()
            self._process.wait()
            self._process = None


_VERIFIER = _VerifierProcess()
