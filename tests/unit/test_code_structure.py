"""The core's structure rules, checked on the source (issue "One typed evidence model"): no module over 450 lines, no
function with more than 6 positional parameters, no import circle between edgeops modules (lazy and typing-only
imports count: they tie two modules together as much), and every stage function returns a typed record, not a dict.
Each rule is also run on a small bad example, so a rule that cannot fail shows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "edgeops"
MAX_LINES = 450
MAX_POSITIONAL = 6
# The core functions the asset bodies call to run a stage: each returns its stage's record.
STAGE_FUNCTIONS = {
    "ingest",
    "run_validation_stage",
    "run_statistics_stage",
    "run_dp_training",
    "run_federated_training",
    "run_baseline_stage",
    "run_reference_stage",
    "run_audit_stage",
    "run_canary_audit_stage",
    "build_and_register",
    "run_benchmark_stage",
    "run_robustness_stage",
    "run_trainability_stage",
    "run_drift_stage",
    "generate_card",
}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path) -> set[str]:
    """Every module a module imports, wherever the import stands: at the top, inside a function (a lazy import still
    ties the two modules together) or under `if TYPE_CHECKING:`."""
    name, found = module_name(path, package), set()
    depth = len(name.split(".")) + (1 if path.name == "__init__.py" else 0)  # a package's own name is its base
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".")[: depth - node.level] if node.level else []
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from package import module`
    return found


def import_cycles(package: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module in the package's import graph (Tarjan): import circles."""
    modules = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    graph = {name: sorted(m for m in imported_modules(path, package) if m in modules and m != name)
             for name, path in modules.items()}  # fmt: skip
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in graph:
        if name not in index:
            connect(name)
    return cycles


def functions(package: Path):
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def positional_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]


def long_modules(package: Path) -> list[str]:
    return [f"{p}: {n} lines" for p in sorted(package.rglob("*.py")) if (n := p.read_text().count("\n")) > MAX_LINES]


def too_many_positional(package: Path) -> list[str]:
    return [
        f"{path}:{node.lineno} {node.name}() takes {len(positional_parameters(node))} positional parameters"
        for path, node in functions(package)
        if len(positional_parameters(node)) > MAX_POSITIONAL
    ]


def stages_returning_dicts(package: Path) -> tuple[list[str], set[str]]:
    """(stage functions annotated to return a dict or nothing, the stage functions found)."""
    bad, found = [], set()
    for path, node in functions(package):
        if node.name in STAGE_FUNCTIONS and node.col_offset == 0:
            found.add(node.name)
            returns = ast.unparse(node.returns) if node.returns else ""
            if not returns or returns.startswith(("dict", "Dict", "Any")):
                bad.append(f"{path}:{node.lineno} {node.name}() -> {returns or 'unannotated'}")
    return bad, found


def test_the_core_keeps_its_structure_rules():
    assert long_modules(CORE) == []
    assert too_many_positional(CORE) == []
    assert import_cycles(CORE) == []
    bad, found = stages_returning_dicts(CORE)
    assert bad == []
    assert found == STAGE_FUNCTIONS, f"stage functions renamed or gone: {STAGE_FUNCTIONS - found}"


@pytest.fixture
def bad_package(tmp_path: Path) -> Path:
    package = tmp_path / "pkg"
    (package / "cards").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cards" / "__init__.py").write_text("")
    # cards.build -> cards.store at the top, cards.store -> cards.build lazily (a circle); errors -> cards.build alone
    (package / "cards" / "build.py").write_text(
        "from pkg.cards.store import write\n\ndef ingest(a, b, c, d, e, f, g) -> dict:\n    return {}\n"
    )
    (package / "cards" / "store.py").write_text("def write():\n    from .build import ingest\n")
    (package / "errors.py").write_text("from pkg.cards import build\n" + "x = 1\n" * MAX_LINES)  # one line over
    return package


def test_each_rule_catches_its_violation(bad_package: Path):
    assert import_cycles(bad_package) == [["pkg.cards.build", "pkg.cards.store"]]  # errors imports build, not back
    assert [line.split(": ")[1] for line in long_modules(bad_package)] == [f"{MAX_LINES + 1} lines"]
    assert too_many_positional(bad_package)[0].endswith("ingest() takes 7 positional parameters")
    bad, found = stages_returning_dicts(bad_package)
    assert found == {"ingest"} and bad[0].endswith("ingest() -> dict")
