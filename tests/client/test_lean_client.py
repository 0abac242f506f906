"""The client library is lean: ``galore_client`` imports neither torch nor matplotlib, not even lazily, and never
the command line (``galore_cli``), which is built on it."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import galore_client

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(galore_client.__file__).parent
HEAVY = ("torch", "torchvision", "matplotlib")
NEVER = HEAVY + ("galore_cli",)
MODULES = sorted(f"galore_client.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)]))


def test_every_module_of_the_client_imports_without_torch_or_matplotlib():
    assert {"galore_client.client", "galore_client.settings", "galore_client.results"} <= set(MODULES)
    code = ("import importlib, sys\n"
            f"for name in {['galore_client'] + MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none", f"importing galore_client loaded {done.stdout.strip()}"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, at any depth (functions, methods, try blocks)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_no_client_module_imports_torch_matplotlib_or_the_cli_anywhere():
    bad = [f"{path.relative_to(REPO)}:{line} imports {top}"
           for path in sorted(PACKAGE.rglob("*.py")) for line, top in imports_of(path) if top in NEVER]
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    if True:\n        import torch.nn\n    from matplotlib import pyplot\n")
    assert sorted(top for _, top in imports_of(sample)) == ["matplotlib", "torch"]
