"""The house rules, checked statically over the source (not ``sys.modules``, which a lazy import hides).

Every ``import`` statement counts, at module level or inside a function, so an arrow cannot hide in
a function body. Arrows run one way: ``cli`` → ``app`` / ``worker`` → ``contract``; the client
imports nothing of the server; and no module reaches itself back through a chain of imports.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"app": ROOT / "app", "worker": ROOT / "worker", "contract": ROOT / "contract", "cli": ROOT / "cli",
            "distillery": ROOT / "client" / "distillery"}
HEAVY = ("torch", "transformers", "peft", "safetensors", "tokenizers", "numpy", "matplotlib")
SERVER_LIBS = ("sqlalchemy", "fastapi", "starlette", "psycopg", "alembic", "uvicorn", "prometheus_client")
# The only app modules the worker may use, and where (the worker reaches the database through its store).
WORKER_MAY_USE = {"app.config", "app.observability"}
WORKER_STORE_MAY_USE = {"app.db", "app.errors", "app.jobs.queue", "app.datasets.records", "app.embedded"}
WORKER_DOORS = {"worker.store", "worker.__main__"}
MAX_LINES = 400


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            found[_module_name(package, root, path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file; ``from a import b`` yields ``a.b`` when
    that is a module of ours, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


GRAPH = {name: sorted({m for m, _ in _imports(name, path)}) for name, path in MODULES.items()}


def _offenders(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for name, path in MODULES.items():
        if name != prefix and not name.startswith(prefix + "."):
            continue
        for target, line in _imports(name, path):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return out


def test_the_walk_sees_the_tree() -> None:
    # Guards the guards: a walker that found nothing would pass every rule below.
    assert {"app.main", "worker.loop", "contract.spans", "cli.main", "distillery.client"} <= set(MODULES)
    assert "contract.spans" in GRAPH["app.trajectories.service"]
    assert "app.jobs.queue" in GRAPH.get("worker.store", [])


def test_app_never_imports_worker_torch_or_the_cli() -> None:
    assert _offenders("app", ("worker", "cli", *HEAVY)) == []


def test_contract_imports_neither_side_nor_heavy_libraries() -> None:
    assert _offenders("contract", ("app", "worker", "cli", "distillery", *HEAVY, *SERVER_LIBS)) == []


def test_the_client_imports_only_httpx_and_the_standard_library() -> None:
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("distillery"):
            continue
        for target, line in _imports(name, path):
            top = target.split(".")[0]
            if top not in ("distillery", "httpx", "__future__") and top not in sys.stdlib_module_names:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == []


def test_nothing_imports_the_cli_but_the_cli() -> None:
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() if not m.startswith("cli")
           for t in targets if t == "cli" or t.startswith("cli.")]
    assert bad == []


def test_the_worker_reaches_app_only_through_its_doors() -> None:
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("worker"):
            continue
        allowed = WORKER_MAY_USE | (WORKER_STORE_MAY_USE if name in WORKER_DOORS else set())
        for target, line in _imports(name, path):
            if (target == "app" or target.startswith("app.")) and target not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == []


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []


def test_no_import_circles() -> None:
    # A package's own __init__ importing its submodules is not an arrow back (Python loads it first).
    graph = {m: [t for t in targets if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))]
             for m, targets in GRAPH.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_files_stay_readable_in_one_sitting(name: str) -> None:
    path = MODULES[name]
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Why this file is long:" in doc, (
        f"{path.relative_to(ROOT)} has {lines} lines; split it by responsibility or say "
        f"'Why this file is long: …' in its docstring")
