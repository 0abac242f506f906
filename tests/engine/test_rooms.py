"""The engine package knows no host's wire: ``galore/`` imports none of the rooms above it (the wire's terms, the
service core, the hosts, the gateway, the client, the generated code, grpc, kserve, TorchServe), and neither names
nor spells a term the wire's home (``galore_wire/``) defines; the wire imports the stdlib and the engine's terms
only; the TorchServe adapter (``handlers/``) goes through the service core, never to the engine. Read from the
source (AST), so function-level imports and restated values count too."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "galore"
WIRE = REPO / "galore_wire"
ABOVE = ("galore_wire", "galore_service", "handlers", "galore_kserve", "galore_gateway", "galore_client", "galore_cli",
         "galore_supervisor", "galore_api", "grpc", "kserve", "ts", "google.protobuf")
# galore_wire's own string values that are also ordinary words in the engine (a field named "options" in an error,
# an image list called "images"), so only their names count there, not their spelling
COMMON_WORDS = {"options", "images"}


def sources(folder: Path) -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(folder.rglob("*.py"))}


def wire_terms() -> tuple[set[str], set[str]]:
    """The names galore_wire defines at module level (constants, classes, functions) and its string constants (not
    the keys of STATUS_TABLE: those are the engine's error code names, which the table maps to wire numbers)."""
    names, spellings = set(), set()
    for tree in sources(WIRE).values():
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                names.add(node.name)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    names.add(target.id)
                    value = node.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        spellings.add(value.value)
    return names, spellings - COMMON_WORDS


def test_the_wire_terms_are_found():
    names, spellings = wire_terms()
    assert {"RPC_KEY", "DEADLINE_KEY", "OIP_REQUEST", "Ports", "KServePorts", "STATUS_TABLE", "RETRY_HINT",
            "PUSHBACK_KEY", "RETRY_AFTER_HEADER", "DrainEstimate", "MAX_ID_CHARS", "MAX_MESSAGE_BYTES"} <= names
    assert {"galore-rpc", "galore-deadline", "grpc-retry-pushback-ms", "Retry-After", "galore_request",
            "explain_response", "application/x-protobuf"} <= spellings


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_engine_imports_no_room_above_it_and_knows_no_wire_term(path):
    names, spellings = wire_terms()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found += [f"imports {m}" for m in modules if any(m == r or m.startswith(r + ".") for r in ABOVE)]
        if isinstance(node, ast.Name) and node.id in names or isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"names {getattr(node, 'id', None) or node.attr}")
        if isinstance(node, ast.alias) and node.name in names:
            found.append(f"imports the name {node.name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spellings:
            found.append(f"spells {node.value!r}")
    assert not found, f"{path.relative_to(REPO)}: {found}"


def imports_of(folder: Path) -> set[str]:
    """Top-level package of every absolute import under ``folder`` (function-level imports included)."""
    found = set()
    for tree in sources(folder).values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module)
    return found


def test_the_wire_imports_the_stdlib_and_the_engine_terms_only():
    allowed = {"galore.options", "galore.errors"}
    outside = {m for m in imports_of(WIRE) if m.split(".")[0] not in sys.stdlib_module_names and m not in allowed}
    assert not outside, f"galore_wire imports {sorted(outside)}"


def test_the_torchserve_adapter_imports_the_service_core_not_the_engine():
    """handlers/ maps rows and context to the service's typed calls; the engine and the proto are the service's."""
    imported = imports_of(REPO / "handlers")
    assert not {m for m in imported if m.split(".")[0] in ("galore", "galore_api")}, sorted(imported)
    assert {"galore_service.calls", "galore_service.service"} <= imported
