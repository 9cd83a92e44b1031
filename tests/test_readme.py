"""README.md stays true: its shell commands run (dry runs where a real run is long) and every file it
names exists after the example run; docs/outputs.md's field tables match the schemas."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
#: Commands that only make sense on another machine or with a secret; each says why it is skipped.
NOT_HERE = {
    "rm -rf .venv": "would delete the venv the tests run in",
    ".venv/bin/python -c": "checks for a GPU",
}


def readme_commands() -> list[str]:
    """Every command line of README's ```bash blocks (continuation lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def as_run_here(command: str) -> str | None:
    """The command as the test runs it: ``make`` and ``snakemake`` as dry runs (a real run is long,
    and the example run is checked separately); None when it is skipped (see :data:`NOT_HERE`)."""
    if any(command.startswith(prefix) for prefix in NOT_HERE) or command.startswith("source "):
        return None
    parts = [part.strip() for part in command.split("&&")]
    dry = []
    for part in parts:
        words = shlex.split(part)
        if words[0] == "make":
            part = "make -n " + shlex.join(words[1:])
        elif "snakemake" in words[0] and "--report" not in words:
            part += " -n"
        dry.append(part)
    return " && ".join(dry)


def test_readme_has_the_two_first_commands() -> None:
    first = readme_commands()[:2]
    assert first == ["make run", "make test"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)


@pytest.mark.slow
def test_every_readme_command_runs_and_every_named_file_exists(example_workflow, tmp_path) -> None:
    """In a copy of the checkout holding the example run's results, with the venv on PATH."""
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    shutil.copytree(example_workflow.workdir / "results", checkout / "results")
    shutil.copytree(REPO / "resources" / "example", checkout / "recordings")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "HF_TOKEN": "hf_test", "DEEPSEEK_API_KEY": "test"}
    ran = 0
    for command in readme_commands():
        runnable = as_run_here(command)
        if runnable is None:
            continue
        result = subprocess.run(["bash", "-c", runnable], cwd=checkout, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{runnable}\n{(result.stdout + result.stderr)[-3000:]}"
        ran += 1
    assert ran >= 10
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:results|config|docs|resources|workflow|bench|profiles)/[^`\s*]+)`", text))
    named |= {f"results/<id>/{name}" for name in re.findall(r"`([\w.]+\.(?:md|txt|srt|vtt|html|webm|json|rttm))`",
                                                           text) if "/" not in name}
    missing = []
    for name in sorted(named):
        path = name.replace("<id>", "welcome_meeting")
        if "corrected" in path or "corrections" in path or "DIR" in path:
            continue  # written only after a review (checked by tests/test_review.py)
        if not (checkout / path).exists():
            missing.append(name)
    assert missing == []


def test_docs_outputs_field_tables_match_the_schemas(tmp_path) -> None:
    from trax.io.schemas import update_docs

    copy = tmp_path / "outputs.md"
    shutil.copy2(REPO / "docs" / "outputs.md", copy)
    assert "<!-- fields: merged -->" in copy.read_text(encoding="utf-8")
    assert not update_docs(copy), "docs/outputs.md is stale: python -m trax.io.schemas docs/outputs.md"


#: Documents that explain what Trax does and why its defaults are what they are, and the report's
#: captions; every measured figure they rely on lives in docs/benchmarks.md (dated, with its
#: command), which they link to. bench/README.md, which says how each script measures, is not one.
EXPLAINING_DOCS = ("README.md", "config/README.md", "docs/architecture.md", "docs/outputs.md",
                   *sorted(str(path.relative_to(REPO)) for path in (REPO / "workflow" / "report").glob("*.rst")))
BENCHMARKS = REPO / "docs" / "benchmarks.md"
#: How a measured figure reads once code, link targets and the tables' `default` column are gone.
#: Limits and defaults are whole numbers or sit in a default column; measurements are not.
MEASURED = re.compile("|".join((
    r"\d+(?:\.\d+)?\s?%",                           # a percentage: WER, DER, share of words or speech
    r"\d+\.\d+\s?(?:s|ms|min|MB|GB)\b",             # a time or a size with decimals
    r"\d+(?:\.\d+)?\s?[x×](?!\w)",                  # a ratio: 1.71x, 2× faster
    # an approximation is a measurement ("about 20 minutes"; not "the target about 5-minute recordings")
    r"(?:~|≈|\babout |\baround |\broughly )\d+(?:\.\d+)?(?![\d-]|\.\d)",
    r"\b\d+ (?:more |fewer )?errors?\b",            # error counts
    r"\bSpearman\s[-−]?\d[\d.]*",                   # rank correlations
    r"\d\s?(?:→|->)\s?[-−]?\d",                     # before → after
    r"\b\d+ of (?:the |all )?\d+\b",                # counts: exact on 4 of 13 recordings
    r"\d\s?(?:vs\.?|against)\s[-−]?\d",             # comparisons
    r"\b(?:scored?|scores|took|peaked at)\s(?:at\s)?[-−~]?\d",  # reported results
    r"\b20\d\d-\d\d-\d\d\b",                        # a measurement's date
)))
#: Phrases that look like figures but are definitions; each says why. Keep this list short.
NOT_MEASURED = {
    r"90 % `?interval`?": "the width of the quality model's WER interval, a definition",
    r"±0\.25 s": "the DER collar (pyannote's 0.5 s in all), a definition",
    r"widened by 0\.3 s": "how far trax.quality.estimates widens a turn, a constant",
}


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file a reader reads as prose: without code blocks, inline code, link
    targets (anchors such as ``#2026-12-07``) and the cells of a table's ``default`` column."""
    lines = []
    fenced = False
    default_column = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        for phrase in NOT_MEASURED:
            line = re.sub(phrase, "", line)
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "`…`", line)
        line = re.sub(r"\]\([^)]*\)", "]", line)
        if not line.startswith("|"):
            default_column = None
        else:
            cells = line.strip().strip("|").split("|")
            names = [cell.strip() for cell in cells]
            if default_column is None and "default" in names:
                default_column = names.index("default")
            elif default_column is not None and default_column < len(cells):
                cells[default_column] = ""
            line = "|".join(cells)
        lines.append((number, line))
    return lines


def measured_figures(path: Path) -> list[tuple[int, str]]:
    """``(line number, figure)`` for every measured figure in the prose of ``path``."""
    return [(number, match.group(0)) for number, line in prose_lines(path) for match in MEASURED.finditer(line)]


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``: lower case, punctuation dropped, spaces to
    '-', a repeated heading numbered ``-1``, ``-2``…"""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = re.match(r"#{1,6} (.+)", line)
        if match and not fenced:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_measured_figures_live_only_in_docs_benchmarks() -> None:
    found = [f"{name}:{number}: {figure!r}" for name in EXPLAINING_DOCS
             for number, figure in measured_figures(REPO / name)]
    assert found == [], "move these to docs/benchmarks.md and link to its section:\n" + "\n".join(found)


def test_the_figure_check_finds_figures_and_spares_settings(tmp_path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        "| key | default | meaning |\n|---|---|---|\n"
        "| `beam_size` | 3.5 | 2 costs one error, 1 five |\n"
        "| `enabled` | false | off: 25.5 s off, 43.6 s on (1.71x) |\n"
        "```\ntrax: done in 4:02 (14.9x real time), 12.5 %\n```\n"
        "Dev WER 4.41 % (20 errors); leave-one-out Spearman 0.527; count 3 -> 4, exact on 4 of 13.\n"
        "A target about 5-minute recordings, not about 20 minutes.\n"
        "Chunks of at most 30 s, `decoded 20.0 s of 40.1 s`, see [this](x.md#2026-12-07), a 90 % interval.\n"
        "| meaning |\n|---|\n| 22 instead of 25 errors, measured 2026-12-04 |\n",
        encoding="utf-8")
    assert measured_figures(sample) == [
        (4, "25.5 s"), (4, "43.6 s"), (4, "1.71x"),            # the default column and code are not prose
        (8, "4.41 %"), (8, "20 errors"), (8, "Spearman 0.527"), (8, "3 -> 4"), (8, "4 of 13"),
        (9, "about 20"),
        (13, "25 errors"), (13, "2026-12-04"),                  # a table without a default column is prose
    ]


def test_links_to_docs_benchmarks_name_its_sections() -> None:
    anchors = github_anchors(BENCHMARKS)
    broken = []
    for name in (*EXPLAINING_DOCS, "bench/README.md"):
        for target, anchor in re.findall(r"\]\(([^)#\s]*benchmarks\.md)#([^)\s]+)\)",
                                          (REPO / name).read_text(encoding="utf-8")):
            if (REPO / name).parent.joinpath(target).resolve() != BENCHMARKS or anchor not in anchors:
                broken.append(f"{name}: {target}#{anchor}")
    assert broken == [], f"no such section in docs/benchmarks.md: {broken}"
