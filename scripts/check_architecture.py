"""Check ivkit's layering from its source: data flows downward only.

    python scripts/check_architecture.py          # exit 1 and one line per problem, else a summary

Every ``import`` in ``ivkit/`` (inside functions and ``TYPE_CHECKING`` blocks too) is an edge
between two modules. The check fails when

* a module imports one on a higher floor (see `FLOORS`), or one of another package on the
  same floor;
* the modules import each other in a loop (of any length);
* a function or method is longer than `MAX_LINES` lines (its ``def`` to its last line).

The floors are the architecture of ``docs/architecture.md``; a new subpackage must be given one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "ivkit"
MAX_LINES = 80

#: package (or top-level module) -> floor. A module may import its own package and lower floors.
FLOORS = {
    "ivkit._version": -1,  # the version string alone: below everything, importable by all
    "ivkit.core": 0,
    "ivkit.models": 1,
    "ivkit.engine": 2,
    "ivkit.activations": 3,
    "ivkit.mediation": 4,
    "ivkit.vectors": 5,
    "ivkit.evaluation": 6,
    "ivkit.pipeline": 7,
    "ivkit.analysis": 8,
    "ivkit.training": 8,
    "ivkit.conjugate": 9,
    "ivkit.synthetic": 9,
    "ivkit.cli": 10,
    "ivkit": 11,
    "ivkit.__main__": 11,
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def resolve(node: ast.ImportFrom | ast.Import, here: str, is_pkg: bool, modules: set[str]) -> list[str]:
    """The ivkit modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "ivkit" or a.name.startswith("ivkit.")]
    if node.level == 0:
        if not (node.module or "").startswith("ivkit"):
            return []
        base = node.module
    else:
        pkg = here if is_pkg else here.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            pkg = pkg.rsplit(".", 1)[0]
        base = f"{pkg}.{node.module}" if node.module else pkg
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in modules else base)
    return out


def floor_of(name: str, floors: dict[str, int] = FLOORS) -> tuple[int, str]:
    """(floor, the key of ``floors`` it falls under) of a module."""
    best = max((k for k in floors if name == k or name.startswith(k + ".")), key=len)
    return floors[best], best


def long_functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_LINES:
                out.append((node.name, node.lineno, n))
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: Path = ROOT, floors: dict[str, int] = FLOORS) -> tuple[list[str], dict[str, set[str]]]:
    """``(problems, import graph)`` of the package at ``root``."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in files:
        here = module_name(path, root)
        rel = path.relative_to(root.parent)
        tree = ast.parse(path.read_text(), filename=str(path))
        floor, key = floor_of(here, floors)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in resolve(node, here, path.name == "__init__.py", modules):
                if target == here:
                    continue
                graph[here].add(target)
                t_floor, t_key = floor_of(target, floors)
                if t_floor > floor or (t_floor == floor and t_key != key and key != "ivkit"):
                    problems.append(f"{rel}:{node.lineno}: {here} (floor {floor}) imports {target} (floor {t_floor}): "
                                    f"data flows downward only")
        for name, line, n in long_functions(tree):
            problems.append(f"{rel}:{line}: {name}() is {n} lines (at most {MAX_LINES})")
    for comp in find_cycles(graph):
        problems.append("import loop: " + " <-> ".join(comp))
    return problems, graph


def main() -> int:
    problems, graph = check()
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"architecture ok: {len(graph)} modules, {sum(len(v) for v in graph.values())} imports, "
          f"no loop, none upward, no function over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
