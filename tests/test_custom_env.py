"""Your own environment (docs/custom-env.md): the doc's example, registered by env.import or an entry point.

The worked example is taken from the doc itself, written into a throw-away package, and
collected from through the real command line, so the doc cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest

import pettingllms.envs as envs
from pettingllms.envs import ENVIRONMENTS, describe_registry, import_env_modules, register
from pettingllms.envs.checker import check_env
from pettingllms.exceptions import ConfigError
from pettingllms.runfiles import RunFiles

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom-env.md"


def doc_example() -> str:
    """The doc's `mypkg/envs.py`: its ```python block that starts with that file name."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (module,) = [block for block in blocks if block.startswith("# mypkg/envs.py")]
    return module


def write_package(root: Path, envs_module: str, name: str = "mypkg") -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "envs.py").write_text(envs_module)
    return root


def write_plugin(root: Path, entry_points: str, dist: str = "mypkg_plugin") -> None:
    """An installed distribution as importlib.metadata finds it on sys.path: a .dist-info folder."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    info.joinpath("entry_points.txt").write_text(f"[pettingllms.envs]\n{entry_points}\n")


def run_python(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1", "PETTINGLLMS_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300
    )


@pytest.fixture
def registry_snapshot():
    """Undo what a test registers, so that other tests see the built-in registry only."""
    names, gym_ids = set(ENVIRONMENTS), set(gymnasium.registry)
    modules = set(sys.modules)
    yield
    for name in set(ENVIRONMENTS) - names:
        del ENVIRONMENTS[name]
    for gym_id in set(gymnasium.registry) - gym_ids:
        del gymnasium.registry[gym_id]
    for module in set(sys.modules) - modules:
        if module.startswith("mypkg"):
            del sys.modules[module]


# -- the doc's example, in this process ---------------------------------------------------


def test_the_doc_example_is_about_sixty_lines_and_passes_the_checker(tmp_path, monkeypatch, registry_snapshot):
    source = doc_example()
    assert 40 <= len(source.splitlines()) <= 80
    monkeypatch.syspath_prepend(str(write_package(tmp_path, source)))
    import_env_modules(["mypkg.envs"])
    assert "guess_number" in ENVIRONMENTS
    check_env("guess_number", expert_seeds=range(10))
    env = envs.make("guess_number", high=1000)
    assert env.high == 1000


def test_register_refuses_a_taken_name_and_accepts_the_same_entry_point_again(registry_snapshot):
    register("sokoban", "pettingllms.envs.sokoban:SokobanEnv", "pettingllms/Sokoban-v1")  # the same: nothing happens
    with pytest.raises(ConfigError, match=r"env 'sokoban' is already registered .*register yours under another name"):
        register("sokoban", "mypkg.envs:GuessNumberEnv")
    with pytest.raises(ConfigError, match=r"Gymnasium id 'pettingllms/Sokoban-v1' is already taken"):
        register("my_sokoban", "mypkg.envs:GuessNumberEnv", gym_id="pettingllms/Sokoban-v1")


def test_register_takes_the_class_itself(tmp_path, monkeypatch, registry_snapshot):
    monkeypatch.syspath_prepend(str(write_package(tmp_path, doc_example())))
    from mypkg.envs import GuessNumberEnv

    register("guess_by_class", GuessNumberEnv)
    assert envs.env_class("guess_by_class") is GuessNumberEnv
    assert type(envs.make("guess_by_class")) is GuessNumberEnv
    row = next(row for row in describe_registry() if row["name"] == "guess_by_class")
    assert row["agents"] == ("guesser",) and row["note"] == "from mypkg.envs:GuessNumberEnv"


@pytest.mark.parametrize(
    "module_source, message",
    [
        (None, "env.import: cannot import 'mypkg.envs': ModuleNotFoundError: No module named 'mypkg'"),
        ("raise RuntimeError('the database is not there')", "RuntimeError: the database is not there"),
        ("def broken(:\n", "env.import: cannot import 'mypkg.envs': SyntaxError"),
    ],
)
def test_a_module_that_cannot_be_imported_is_one_config_error(
    tmp_path, monkeypatch, registry_snapshot, module_source, message
):
    if module_source is not None:
        monkeypatch.syspath_prepend(str(write_package(tmp_path, module_source)))
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        import_env_modules(["mypkg.envs"])
    assert "\n" not in str(caught.value)


def test_the_registry_description_lists_built_ins_and_the_stateful_alias():
    rows = {row["name"]: row for row in describe_registry()}
    assert {"sokoban", "search_env", "search_single_agent", "consult_env", "stateful_env"} <= set(rows)
    assert rows["search_env"]["agents"] == ("web_search_agent", "search_reasoning_agent")
    assert rows["consult_env"]["expert"] is True and rows["consult_env"]["max_turns"] == 6
    assert rows["sokoban"]["note"] == ""
    assert "env.benchmark=sokoban|plan_path|sudoku" in rows["stateful_env"]["note"]


# -- through the command line -------------------------------------------------------------


@pytest.mark.slow
def test_collect_from_the_doc_example_through_the_cli(tmp_path):
    package = write_package(tmp_path / "src", doc_example())
    out = tmp_path / "data"
    result = run_python(
        [
            "-m", "pettingllms", "collect", "env.import=mypkg.envs", "env.name=guess_number", "policy=expert",
            "training.sft_num_episodes=5", f"training.sft_data_dir={out}", "training.run_name=guess",
        ],
        package,
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = json.loads(RunFiles(out, "guess").stats.read_text())
    assert stats["env_name"] == "guess_number"
    assert stats["total_episodes"] == 5 and stats["successful_episodes"] == 5
    records = (out / "sft_data_guess.jsonl").read_text().splitlines()
    assert len(records) > 0
    assert "Guess:" in json.loads(records[0])["messages"][-1]["content"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "module_source, expected",
    [
        (None, "error: env.import: cannot import 'mypkg.envs': ModuleNotFoundError: No module named 'mypkg'"),
        ("import no_such_dependency_here\n", "error: env.import: cannot import 'mypkg.envs': ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "error: env.import: cannot import 'mypkg.envs': RuntimeError: boom"),
    ],
)
def test_a_broken_env_import_is_one_error_line_and_exit_2(tmp_path, module_source, expected):
    package = write_package(tmp_path / "src", module_source) if module_source else tmp_path
    args = ["-m", "pettingllms", "collect", "env.import=mypkg.envs", "env.name=guess_number", "policy=expert"]
    result = run_python(args, package, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(expected), result.stderr


LIST_ENVS = (
    "from pettingllms.envs import describe_registry; print([(r['name'], r['note']) for r in describe_registry()])"
)


@pytest.mark.slow
def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path):
    root = write_package(tmp_path / "site", doc_example())
    write_plugin(root, "guess = mypkg.envs")
    listing = run_python(["-c", LIST_ENVS], root, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "('guess_number', 'from mypkg.envs:GuessNumberEnv')" in listing.stdout
    made = run_python(
        ["-c", "import pettingllms; print(type(pettingllms.make('guess_number')).__name__)"], root, tmp_path
    )
    assert made.stdout.strip() == "GuessNumberEnv", made.stderr


@pytest.mark.slow
def test_a_broken_plugin_is_one_warning_and_the_registry_still_works(tmp_path):
    root = tmp_path / "site"
    write_plugin(root, "broken = no_such_module_anywhere\nfailing = json:loads")  # loads() needs an argument
    listing = run_python(["-c", LIST_ENVS], root, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "'sokoban'" in listing.stdout and "'stateful_env'" in listing.stdout
    broken, failing = sorted(listing.stderr.strip().splitlines())
    assert broken.startswith("warning: env plugin 'broken' (no_such_module_anywhere) failed to load and is skipped: ")
    assert broken.endswith("ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    assert failing.startswith("warning: env plugin 'failing' (json:loads) failed to load and is skipped: TypeError")
