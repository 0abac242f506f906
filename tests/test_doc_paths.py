"""Every repository path and module the docs name in backticks exists, so a move or a rename cannot leave a stale
reference behind: README.md, docs/*.md, BENCHMARKS.md, RELIABILITY.md, EVALUATION.md and deploy/**/*.md.

A word in backticks is checked when it starts with a top-level entry of the repository or a project package's
name (``galore/options.py``, ``deploy/k8s/base``, ``@docs/examples/chelsea.jpg`` in a curl line; a pytest node id
``tests/x.py::test_y`` names a test defined in that file), or is a dotted name under one of the project's packages
(``galore_client.client.GaloreClient``: the modules must exist, and the first other name must be defined in the
module before it; ``galore.v1.Explainer`` names the proto package, defined in ``protos/galore/v1/``). Paths the
build or a run creates are left out (``GENERATED``), and so are placeholders (``<URL>``, ``DIR``) and globs.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "BENCHMARKS.md", "RELIABILITY.md", "EVALUATION.md",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),  # not docs/evaluation/: run output
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "deploy").rglob("*.md"))]
# created by `make protos`, `make archive`, a run or an install; git-ignored
GENERATED = ("galore_api", ".run", ".venv", "build", "galore-report")
GENERATED_SUFFIXES = (".mar",)  # model archives: `make archive`, python -m model_store.build
TOP = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")} - {"__pycache__", ".pytest_cache"}
PROJECT = re.compile(r"galore\w*|handlers")  # the project's package names, present or not
PACKAGES = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} | {"galore_api"}
PROTO_PACKAGE = "galore.v1."
SPAN = re.compile(r"``?([^`\n]+?)``?")
EDGES = "()[]{},;:'\"!?*"


def words(text: str):
    """Each whitespace-separated word of each backticked span, trimmed of punctuation around it."""
    for span in SPAN.findall(text):
        for word in span.split():
            word = word.strip(EDGES).removeprefix("@")
            word = re.sub(r":\d+(-\d+)?$", "", word)  # path:line
            if word:
                yield word


def is_path(word: str) -> bool:
    first = word.split("/", 1)[0]
    known = first in TOP or "/" in word and PROJECT.fullmatch(first)
    return ("/" in word or word in TOP) and bool(known) and not any(c in word for c in "<>*{}$=|")


FILE_SUFFIXES = {"py", "md", "yaml", "yml", "json", "proto", "toml", "txt", "png", "sh", "properties", "xml", "mar",
                 "pt", "html", "cfg", "ini"}  # `galore_handler.py` is a file name, not a module path


def is_module_name(word: str) -> bool:
    if word.rpartition(".")[2] in FILE_SUFFIXES:
        return False
    return bool(re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", word)) and bool(PROJECT.fullmatch(word.split(".")[0]))


def generated(word: str) -> bool:
    return word.endswith(GENERATED_SUFFIXES) or \
        any(word == g or word.startswith(g + "/") or word.startswith(g + ".") for g in GENERATED)


def path_problem(word: str) -> str | None:
    path, _, test = word.partition("::")
    if not (REPO / path.rstrip("/")).exists():
        return f"{word}: no such path"
    name = test.split("::")[-1].split("[")[0]
    if name and not re.search(rf"def {re.escape(name)}\b", (REPO / path).read_text(encoding="utf-8")):
        return f"{word}: no test {name} in {path}"
    return None


def module_problem(word: str) -> str | None:
    """``pkg.mod.name``: walk the packages and modules; the first part that is neither must be defined in the
    module (or package ``__init__``) before it, and be the last part (or an attribute of it: a method)."""
    if word.startswith(PROTO_PACKAGE):
        name = word.split(".")[2]
        protos = " ".join(p.read_text(encoding="utf-8") for p in (REPO / "protos" / "galore" / "v1").glob("*.proto"))
        return None if re.search(rf"\b{re.escape(name)}\b", protos) else f"{word}: not in protos/galore/v1/"
    parts = word.split(".")
    where = REPO / parts[0]
    if not where.is_dir():
        return f"{word}: no package {parts[0]}"
    for i, part in enumerate(parts[1:], start=1):
        if (where / part).is_dir() and (where / part / "__init__.py").is_file():
            where = where / part
            continue
        if where.is_dir() and (where / f"{part}.py").is_file():
            where = where / f"{part}.py"
            continue
        source = where / "__init__.py" if where.is_dir() else where
        if where.is_dir() and part.islower() and not source.read_text(encoding="utf-8").count(part):
            return f"{word}: no module {'.'.join(parts[:i + 1])}"
        if not re.search(rf"\b{re.escape(part)}\b", source.read_text(encoding="utf-8")):
            return f"{word}: {part} is not defined in {source.relative_to(REPO)}"
        return None
    return None


def problems(doc: str) -> list[str]:
    found = []
    for word in dict.fromkeys(words((REPO / doc).read_text(encoding="utf-8"))):
        if generated(word):
            continue
        problem = path_problem(word) if is_path(word) else module_problem(word) if is_module_name(word) else None
        if problem:
            found.append(problem)
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_backticked_path_in_the_docs_exists(doc):
    assert (REPO / doc).is_file()
    assert not problems(doc), f"{doc}: stale references:\n" + "\n".join(problems(doc))


def test_the_check_catches_stale_paths_and_modules(tmp_path):
    assert path_problem("galore/no_such_module.py") and not path_problem("galore/options.py")
    assert module_problem("galore_client.no_such_module") and not module_problem("galore_client.client.GaloreClient")
    assert module_problem("galore_client.client.NoSuchName") and module_problem("galore_nothing.x")
    assert not module_problem("galore.v1.Explainer") and module_problem("galore.v1.NoSuchMessage")
    assert path_problem("tests/test_doc_paths.py::test_no_such_test")
    assert not path_problem("tests/test_doc_paths.py::test_every_backticked_path_in_the_docs_exists[README.md]")
    assert is_path("galore_nothing/x.py") and generated("model_store/fruit.mar")
    assert not is_module_name("galore_handler.py") and is_module_name("galore_client.client")
    assert is_path("deploy/k8s/base") and not is_path("DIR/proxy.json") and not is_path("<URL>/v1")
    assert list(words("run `curl --data-binary @docs/examples/chelsea.jpg x` and see (`galore/engine.py`).")) == \
        ["curl", "--data-binary", "docs/examples/chelsea.jpg", "x", "galore/engine.py"]
