"""The package's modules import one another without a circle (a circle breaks partial
imports and hides which module owns what)."""

from __future__ import annotations

import ast
import pathlib

import augserve

PACKAGE = pathlib.Path(augserve.__file__).parent


def imports_of(path: pathlib.Path) -> set[str]:
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("augserve."):
            deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("augserve."))
    return deps


def test_no_import_circle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for d in graph.get(start, ()):
            if d == goal or (d not in seen and reaches(d, goal, seen | {d})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not circles, f"modules on an import circle: {circles} ({graph})"
