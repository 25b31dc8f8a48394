"""The packages' import structure: no import cycle (type-only imports count), no private name imported from
another module, and imports inside functions only where a module says why (parsed from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("emberharmony_core", "emberharmony_assets")

# Imports of our own modules inside functions, and why each is not at the top of its module. Any other is a
# cycle being dodged or a module that should import at the top.
LATE_IMPORTS = {
    # the environment (ARROW_DEFAULT_MEMORY_POOL, DAGSTER_HOME, the partitions' range) is set before the
    # definitions, partitions and Dagster's own modules load
    "emberharmony_assets.main": "the environment is set first",
    "emberharmony_assets.scale_out": "the environment is set first",
    # the definitions load under Dagster's maturity warnings filter; the BigQuery resource only when asked for
    "emberharmony_assets.definitions": "warnings filtered; BigQuery only when configured",
    # DuckDB and dagster-duckdb only when a reader is opened
    "emberharmony_assets.resources": "DuckDB only when a reader is opened",
    # scikit-learn only when converting to it
    "emberharmony_core.features.preprocess.fitted": "scikit-learn only when converting",
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """Our modules that ``node`` imports (``from package import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if target.split(".")[0] not in PACKAGES:
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]


def scan():
    """(module-level import graph, [(module, line, names) of private imports], {module: late import lines})."""
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    private, late = [], {}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for statement in tree.body for node in ast.walk(statement) if not _in_function(statement)}
        top |= {id(n) for s in tree.body if isinstance(s, ast.If) for n in ast.walk(s)}  # TYPE_CHECKING blocks
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = imported(module, path, node, known)
            if not targets:
                continue
            if isinstance(node, ast.ImportFrom):
                private += [(module, node.lineno, a.name) for a in node.names if a.name.startswith("_")]
            if id(node) in top:
                graph[module] |= {t for t in targets if t in known and t != module}
            else:
                late.setdefault(module, []).append(node.lineno)
    return graph, private, late


def _in_function(statement: ast.stmt) -> bool:
    return isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (a package importing its own submodules is not one: that is how ``__init__`` re-exports)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if target.startswith(module + "."):
                continue
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif not state.get(target):
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module)
    return found


def test_no_import_cycle_between_our_modules():
    graph, _, _ = scan()
    assert len(graph) > 50  # the scan found the packages
    assert cycles(graph) == []


def test_no_private_name_is_imported_from_another_module():
    _, private, _ = scan()
    assert private == []


def test_imports_inside_functions_only_where_the_module_says_why():
    _, _, late = scan()
    unexplained = {module: lines for module, lines in late.items() if module not in LATE_IMPORTS}
    assert unexplained == {}, "import at module level, or add the module to LATE_IMPORTS with the reason"
    assert sorted(LATE_IMPORTS) == sorted(late)  # no stale entry
