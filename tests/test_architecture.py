"""architecture.md's arrows, checked: which layer may import which (by reading the imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = ("schemas", "streams", "observability", "services", "benchmarks", "tests")
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "streams": {"streams", "schemas"},
    "observability": {"observability", "schemas"},
    "services": {"services", "streams", "schemas", "observability"},
    "benchmarks": {"benchmarks", "services", "streams", "schemas", "observability"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_architecture_md_allows(layer: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_imports(path) - ALLOWED[layer])
        for path in (ROOT / layer).rglob("*.py")
        if _imports(path) - ALLOWED[layer]
    }
    assert wrong == {}, f"{layer}/ imports what architecture.md does not allow: {wrong}"


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for layer in ("schemas", "streams", "observability", "services")
        for path in (ROOT / layer).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_services_root_holds_packages_and_few_modules() -> None:
    modules = sorted(p.name for p in (ROOT / "services").glob("*.py"))
    assert modules == ["__init__.py", "client.py", "keys.py"]


def test_library_internals_appear_in_one_module() -> None:
    internals = (
        "_handle_event",
        "_handle_eio_message",
        "_binary_packet",
        "_generate_ack_id",
        "_send_packet",
        "manager.rooms",
        ".eio.sockets",
    )
    users = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "services").rglob("*.py")
        if any(name in path.read_text() for name in internals)
    }
    assert users == {"services/edge/sio.py"}
