"""Import structure of src/trax and bench/: cycles and imports against the declared direction.

Usage::

    .venv/bin/python bench/imports.py

Prints, per package, which packages it imports (edges counted, lazy imports inside functions
included), then every violation; exits 1 when there is one. ``tests/test_imports.py`` runs it.
The allowed direction (runtime → stages → io → top level) is :data:`ALLOWED`; each subpackage's
``__init__.py`` says the same in words.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = "top"  # trax's top-level modules: errors, console, progress, process
#: Which packages each package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    TOP: set(),
    "io": {TOP},
    "quality": {"io", TOP},
    "asr": {"io", "quality", TOP},
    "diarization": {"io", "quality", TOP},
    "transcript": {"io", "quality", "diarization", TOP},
    "report": {"io", "quality", TOP},
    "runtime": {"asr", "diarization", "transcript", "quality", "report", "io", TOP},
    "bench": {"runtime", "asr", "diarization", "transcript", "quality", "report", "io", TOP},
}


def source_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of ``root``'s src/trax (dotted name) and bench/ (``bench.<name>``)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / "src" / "trax").rglob("*.py")):
        parts = path.relative_to(root / "src").with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((root / "bench").glob("*.py")):
        modules[f"bench.{path.stem}"] = path
    return modules


def package_of(module: str) -> str:
    """``trax.asr.refine`` → ``asr``; ``trax.errors`` and ``trax`` → :data:`TOP`; ``bench.x`` → bench."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "bench"
    if len(parts) >= 3 or (len(parts) == 2 and parts[1] in ALLOWED):
        return parts[1]
    return TOP


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of :func:`source_modules` that ``module`` imports, anywhere in its body."""
    found: set[str] = set()
    bench = module.startswith("bench.")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from trax.asr import domains`` imports the module trax.asr.domains (and trax.asr).
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if bench and f"bench.{name}" in modules:
                found.add(f"bench.{name}")  # scripts import each other by bare name
            elif name in modules:
                found.add(name)
    found.discard(module)
    return found


def check(root: Path = REPO) -> tuple[dict[str, dict[str, int]], list[str]]:
    """(edges counted per package pair, violations) of the checkout at ``root``."""
    modules = source_modules(root)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    counts: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for name, targets in sorted(graph.items()):
        source = package_of(name)
        for target in sorted(targets):
            into = package_of(target)
            counts.setdefault(source, {}).setdefault(into, 0)
            counts[source][into] += 1
            # A package's __init__ is its own; importing the top-level ``trax`` (its version) is fine.
            if into != source and into not in ALLOWED[source]:
                problems.append(f"{name} imports {target}: {source} may not import {into}")
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        problems.append("import cycle: " + " -> ".join(exc.args[1]))
    return counts, problems


def main() -> int:
    counts, problems = check()
    order = list(ALLOWED)
    print(f"| package | {' | '.join(order)} |")
    print("|---" * (len(order) + 1) + "|")
    for source in order:
        row = counts.get(source, {})
        print(f"| {source} | " + " | ".join(str(row.get(into, "")) for into in order) + " |")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
