"""The shape of the package, checked so that it stays as clear as it is now.

- No import cycle between modules, counting imports inside functions too (they still tie the
  modules together), and no import from `config` up into the stages that use it.
- No module over 600 lines except the sandbox (one threat model, read as a whole).
- The file-naming scheme of a run lives in `runfiles` only; the tiny-model fallback in `models` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pettingllms"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The pettingllms modules `path` imports (outside `if TYPE_CHECKING:` blocks)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # type-only imports do not run: drop them before walking
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(path) for path in paths}
    # A package's __init__ re-exports its modules; importing `pettingllms.collect` means its modules.
    return {module_name(path): imports_of(path, known) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    graph = import_graph()
    # A package importing its own submodules (to re-export them) is not a cycle of meaning.
    for node, targets in graph.items():
        graph[node] = {t for t in targets if not (t.startswith(node + ".") or node.startswith(t + "."))}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_config_imports_nothing_above_it():
    graph = import_graph()
    for module in [name for name in graph if name.startswith("pettingllms.config")]:
        upward = {
            t
            for t in graph[module]
            if t.startswith(("pettingllms.training", "pettingllms.collect", "pettingllms.policies", "pettingllms.cli"))
        }
        assert not upward, f"{module} imports {upward}"


def test_no_module_is_too_long_to_read():
    lengths = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    too_long = {name: lines for name, lines in lengths.items() if lines > 600 and name != "sandbox.py"}
    assert not too_long


def spelled_in(text: str) -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(
            text in line and not line.strip().startswith(("#", '"', "'", ">>>")) and "`" not in line
            for line in path.read_text().splitlines()
        )
    )


def test_each_rule_is_spelled_in_one_module():
    assert spelled_in('f"{RECORDS_PREFIX}') == ["runfiles.py"]
    assert spelled_in('"sft_data_') == spelled_in('"rollouts_') == ["runfiles.py"]
    assert spelled_in("import tiny_model_path") == ["models.py"]
