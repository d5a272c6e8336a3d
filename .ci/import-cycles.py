#!/usr/bin/env python3
"""Fails if the modules of a crate import each other in a cycle (issue 22: a newcomer
follows a call in one direction). A module is a file or folder directly under src/;
`use crate::a::...` (and `crate::a::` paths in code) make it depend on `a`. Run from the
repository root: .ci/import-cycles.py"""
import pathlib
import re
import sys

CRATES = sorted(pathlib.Path("services").glob("*/src")) + [
    pathlib.Path("crates/platform/src"),
    pathlib.Path("crates/agilepm/src"),
]
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def modules(src):
    """Top-level module name -> the files that make it."""
    found = {}
    for path in src.rglob("*.rs"):
        top = path.relative_to(src).parts[0]
        name = top[:-3] if top.endswith(".rs") else top
        if name in ("lib", "main"):
            continue
        found.setdefault(name, []).append(path)
    return found


def cycles(graph):
    """Every cycle, once, as a list of modules."""
    found, seen = [], set()

    def visit(node, stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle + [nxt])
            elif len(stack) < 20:
                visit(nxt, stack + [nxt])

    for node in sorted(graph):
        visit(node, [node])
    return found


failed = False
for src in CRATES:
    mods = modules(src)
    graph = {}
    for name, paths in mods.items():
        deps = set()
        for path in paths:
            for line in path.read_text().splitlines():
                if line.lstrip().startswith("//"):
                    continue
                deps.update(m for m in USE.findall(line) if m in mods and m != name)
        graph[name] = deps
    for cycle in cycles(graph):
        failed = True
        print(f"{src.parent}: modules import each other in a cycle: {' -> '.join(cycle)}")
if failed:
    sys.exit(1)
print(f"no import cycles between the modules of {len(CRATES)} crates")
