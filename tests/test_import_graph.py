"""No import circle between the project's modules, not even through function-level imports: the graph is read
from the source (AST), every ``import`` at any depth counts. Tests, benchmarks and generated code are left out; a
package's ``__init__`` that re-exports its own modules is not a circle."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = {"tests", "benchmarks", "galore_api", "build", ".venv", ".git"}


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in LEFT_OUT or any(part.startswith(".") for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth, relative imports resolved; ``from a import b`` yields a
    and a.b (b may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def circles(root: Path) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    mods = modules(root)
    inits = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph = {m: sorted(t for t in imported(m, p) if t in mods and t != m and not (t in inits and m.startswith(t + ".")))
             for m, p in mods.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_project():
    assert circles(REPO) == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles(REPO))


def test_the_check_sees_a_circle_hidden_in_a_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from . import a\n")
    (tmp_path / "pkg" / "a.py").write_text("from .b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import g\n")
    assert circles(tmp_path) == [["pkg.a", "pkg.b"]]
