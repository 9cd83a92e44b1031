"""The code's structure: no import cycles in src/ or bench/, imports only in the declared direction."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports_tool():
    spec = importlib.util.spec_from_file_location("bench_imports", REPO / "bench" / "imports.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_src_and_bench_have_no_cycle_and_no_import_against_the_direction() -> None:
    counts, problems = _imports_tool().check()
    assert problems == []
    assert counts["runtime"]["asr"] > 0 and "runtime" not in counts["asr"]  # the graph was really read


def test_a_cycle_and_a_stage_importing_the_runtime_are_reported(tmp_path) -> None:
    def write(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    for package in ("", "asr/", "runtime/"):
        write(f"src/trax/{package}__init__.py", "")
    write("src/trax/asr/transcribe.py", "def f():\n    from trax.runtime.client import call\n")
    write("src/trax/runtime/client.py", "from trax.asr import transcribe\n")
    write("bench/one.py", "from two import x\n")
    write("bench/two.py", "import one\n")
    _, problems = _imports_tool().check(tmp_path)
    assert "trax.asr.transcribe imports trax.runtime.client: asr may not import runtime" in problems
    cycles = [p for p in problems if p.startswith("import cycle")]
    assert len(cycles) == 1 and ("bench.one" in cycles[0] or "trax.asr.transcribe" in cycles[0])
