"""The package's one structural rule: imports point down the layers, never up or across.

The layers, bottom to top, are drawn in ``broker/__init__.py``. This test reads every module's
imports (module level and function level, absolute and relative) and fails on any import of a
higher layer, or of a sibling folder of the same height (``cluster`` and ``engines`` do not
know each other). A module may import anything in its own folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import broker

PACKAGE_DIR = Path(broker.__file__).parent

#: Height of each top-level part of the package; modules directly in broker/ are the top.
LAYER_HEIGHT = {
    "core": 0,
    "wire": 1,
    "hub": 2,
    "engines": 3,
    "cluster": 3,
    "edge": 4,
    "control": 5,
}
TOP = 6


def _part(module: str) -> str:
    """The layer folder a dotted module name belongs to (``""`` for top-level modules)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYER_HEIGHT:
        return parts[1]
    return ""


def _height(module: str) -> int:
    part = _part(module)
    return LAYER_HEIGHT[part] if part else TOP


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every broker import in one file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("broker")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("broker"):
                    found.append((node.lineno, node.module))
                continue
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:  # from . import a, b: each name may be a module
                found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
    return found


def _allowed(source: str, target: str) -> bool:
    """May module ``source`` import module ``target``?"""
    if target == "broker":  # the package itself: only top-level modules may
        return not _part(source)
    if _part(source) == _part(target):
        return True
    if not _part(source):  # the top (cli, server, ...) composes everything
        return True
    return _height(target) < _height(source)


def _violations() -> list[str]:
    return [
        f"{_module_name(path)}:{line} imports {target}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for line, target in _imports(path)
        if not _allowed(_module_name(path), target)
    ]


def test_imports_point_down_the_layers() -> None:
    assert _violations() == []


def test_every_layer_folder_exists_and_is_documented() -> None:
    doc = broker.__doc__ or ""
    for part in LAYER_HEIGHT:
        assert (PACKAGE_DIR / part / "__init__.py").is_file(), part
        assert f"{part}/" in doc, f"broker/__init__.py does not draw {part}/"


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("broker.core.events", "broker.hub.facade", False),
        ("broker.hub.facade", "broker.core.events", True),
        ("broker.engines.redis.base", "broker.cluster.node", False),
        ("broker.edge.dataplane", "broker.edge.http1", True),
        ("broker.server", "broker.edge.dataplane", True),
        ("broker.control.app", "broker.config", False),
    ],
)
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    """The checker is not vacuous: it refuses an upward and a sideways import."""
    assert _allowed(source, target) is allowed


#: The edge's transports. Each opens streams through edge/session.py; none imports another,
#: except that the listener (dataplane) hands WebSocket upgrades to wsconnection.
ADAPTERS = {"broker.edge.dataplane", "broker.edge.asgi", "broker.edge.wsconnection"}
DISPATCH = {("broker.edge.dataplane", "broker.edge.wsconnection")}


def test_no_adapter_imports_another() -> None:
    found = [
        f"{_module_name(path)}:{line} imports {target}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if _module_name(path) in ADAPTERS
        for line, target in _imports(path)
        if target in ADAPTERS and (_module_name(path), target) not in DISPATCH
    ]
    assert found == []
