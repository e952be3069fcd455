"""Every bench script runs, in its tiny `--quick` mode, and prints its JSON line and summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = ["openai_client", "hf_overhead", "sandbox", "memory", "train"]


def run_quick(name: str, *options: str) -> list[str]:
    command = [sys.executable, str(BENCH / f"{name}.py"), "--quick", *options]
    output = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert output.returncode == 0, output.stderr[-3000:]
    return output.stdout.strip().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_each_bench_script_prints_one_json_line_and_a_summary(name):
    lines = run_quick(name)
    result = json.loads(next(line for line in lines if line.startswith("{")))
    assert result["bench"] == name
    assert result["machine"]["cpus"] >= 1
    assert lines[-1].startswith(f"{name}: ") and "load average" in lines[-1]


@pytest.mark.slow
def test_run_all_writes_the_table_and_keeps_the_notes_below_the_marker(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("old table\n<!-- kept by run_all -->\n\n## Notes\nkept\n")
    run_quick("run_all", "--only", "sandbox", "memory", "--output", str(results))
    text = results.read_text()
    assert "old table" not in text
    assert "| sandbox run_python vs bare python, 1 in flight |" in text
    assert "peak RSS" in text and text.endswith("## Notes\nkept\n")
