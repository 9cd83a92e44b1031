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
