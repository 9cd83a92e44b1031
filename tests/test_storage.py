"""Works where teams keep their data: ordinary permissions, a symlinked results/, the model server's
path policy, ``snakemake --directory`` from a read-only checkout, and a full disk.

One real run (the module fixture ``team_run``) serves the first four workflow tests: snakemake
started in a read-only copy of the checkout with ``--directory`` pointing elsewhere, umask 0027,
``results/`` and ``logs/`` symlinks to another folder, the model server on. The full-disk test
(root only: it mounts a tmpfs) reruns the same inputs and compares bytes with that run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import JFK, JFK_TEXT, REPO, SNAKEMAKE, ffmpeg, in_dir, result_tree
from trax.io.jsonio import read_json
from trax.quality.evaluation import normalize_text
from trax.runtime.client import ServerDied, ServerError, ServerUnavailable, request
from trax.runtime.protocol import runtime_dir, socket_path

ROOT = os.geteuid() == 0
#: What a checkout needs to run the workflow (src too: jobs import trax from beside the Snakefile).
CHECKOUT_PARTS = ("Snakefile", "workflow", "config", "profiles", "src")


def _mount(*args: str) -> bool:
    """Run mount(8); False where this root may not mount (a container without CAP_SYS_ADMIN)."""
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@contextlib.contextmanager
def read_only_checkout(base: Path):
    """A copy of the checkout that cannot be written: a read-only bind mount as root (root writes
    through mode bits), mode bits otherwise. Yields (path, writable copy for snapshots)."""
    copy = base / "checkout"
    copy.mkdir()
    for name in CHECKOUT_PARTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, copy / name)
    view = base / "checkout-ro"
    view.mkdir()
    if ROOT and _mount("--bind", str(copy), str(view)):
        try:
            assert _mount("-o", "remount,bind,ro", str(view))
            yield view, copy
        finally:
            _umount(view)
        return
    paths = [copy, *copy.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield copy, copy
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


def _stop_server(workdir: Path) -> None:
    with in_dir(workdir), contextlib.suppress(ServerUnavailable, ServerDied):
        request("shutdown")


@pytest.fixture(scope="module")
def team_run(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("team")
    inputs = base / "inputs"
    inputs.mkdir()
    shutil.copy(JFK, inputs / "jfk.flac")
    ffmpeg("-i", str(JFK), "-t", "3.5", str(inputs / "short.flac"))  # "And so, my fellow Americans"
    workdir = base / "wörk dir"  # spaces and accents in the work directory's path keep working
    workdir.mkdir()
    scratch = base / "scratch" / "results"  # results/ and logs/ on "another disk"
    for name in ("results", "logs"):
        (base / "scratch" / name).mkdir(parents=True)
        (workdir / name).symlink_to(base / "scratch" / name)
    config = base / "trax.yaml"  # outside the workdir: its mode is ours, not the run's
    config.write_text(yaml.safe_dump({"inputs": str(inputs), "server": {"idle_timeout_s": 300}}), encoding="utf-8")
    with read_only_checkout(base) as (checkout, copy):
        before = _snapshot(copy)
        try:
            proc = subprocess.run(
                [SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config), "--cores", "2"],
                cwd=checkout, capture_output=True, text=True, umask=0o027,
                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
            )
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
            yield SimpleNamespace(base=base, inputs=inputs, workdir=workdir, scratch=scratch, checkout=checkout,
                                  copy=copy, before=before, output=proc.stdout + proc.stderr)
        finally:
            _stop_server(workdir)


def _modes(root: Path, skip: set[str]) -> dict[str, int]:
    """Permission bits of everything under ``root`` (symlinked folders followed), by relative path."""
    modes = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in dirs + files:
            path = Path(folder, name)
            modes[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return modes


def test_outputs_get_the_permissions_of_a_plain_write_under_umask_0027(team_run) -> None:
    modes = _modes(team_run.workdir, skip={".snakemake"})
    files = {p: m for p, m in modes.items() if (team_run.workdir / p).is_file()}
    folders = {p: m for p, m in modes.items() if p not in files and p not in ("results", "logs")}  # our links
    for expected in ("results/jfk/audio.wav", "results/jfk/merged.json", "results/jfk/transcript.srt",
                     "results/jfk/report/timeline.svg", "results/summary.tsv", "results/report/summary.html",
                     "logs/model_server.log", "logs/normalize/jfk.log", "benchmarks/transcribe_fast/jfk.tsv"):
        assert expected in files, f"{expected} missing"
    assert {p: oct(m) for p, m in files.items() if m != 0o640} == {}
    assert {p: oct(m) for p, m in folders.items() if m != 0o750} == {}
    # The server's socket and its directories stay private whatever the umask.
    with in_dir(team_run.workdir):
        assert request("ping")["workdir"] == str(team_run.workdir)
        assert stat.S_IMODE(os.stat(socket_path()).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime_dir()).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(runtime_dir().parent).st_mode) == 0o700


def test_symlinked_results_are_served_by_the_model_server(team_run) -> None:
    assert (team_run.workdir / "results").is_symlink() and (team_run.workdir / "logs").is_symlink()
    assert (team_run.scratch / "jfk" / "merged.json").is_file()
    for rule, verb in (("transcribe_fast", "transcribing"), ("diarize", "diarizing")):  # refine: nothing to redo
        log = (team_run.workdir / "logs" / rule / "jfk.log").read_text(encoding="utf-8")
        assert f"{verb} results/jfk/audio.wav via the model server" in log, log[-2000:]
    assert "refused" not in (team_run.workdir / "logs" / "model_server.log").read_text(encoding="utf-8")
    # The real location, named absolutely, is the workflow's file too.
    settings = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["transcribe_fast"]
    with in_dir(team_run.workdir):
        served = request("transcribe", {"wav_path": str(team_run.scratch / "jfk" / "audio.wav"),
                                        "sample_id": "jfk", "settings": settings})
    assert served["text"] == read_json(team_run.scratch / "jfk" / "transcript.fast.json")["text"]


def test_crafted_requests_for_other_files_are_refused_and_logged(team_run) -> None:
    planted = team_run.scratch / "jfk" / "planted.wav"
    planted.symlink_to("/etc/shadow")
    crafted = ["/etc/shadow", str(Path.home() / ".ssh" / "id_rsa"), "results/../../../../../../etc/passwd",
               "results/jfk/planted.wav"]
    try:
        with in_dir(team_run.workdir):
            for path in crafted:
                with pytest.raises(ServerError) as refused:
                    request("transcribe", {"wav_path": path, "sample_id": "x", "settings": {}})
                assert refused.value.code == "forbidden_path", path
            with pytest.raises(ServerError) as refused:
                request("refine", {"wav_path": "results/jfk/audio.wav", "fast_path": "/etc/shadow",
                                   "settings": {}, "domains": {}})
            assert refused.value.code == "forbidden_path"
            assert request("ping")["workdir"] == str(team_run.workdir)  # and it keeps serving
    finally:
        planted.unlink()
    log = (team_run.workdir / "logs" / "model_server.log").read_text(encoding="utf-8")
    refusals = [line for line in log.splitlines() if " WARNING refused " in line]
    for path in crafted:
        assert sum(f"refused wav_path {path!r}" in line for line in refusals) == 1, (path, refusals)
    assert any("refused fast_path '/etc/shadow'" in line for line in refusals)


def test_directory_runs_from_a_read_only_checkout(team_run) -> None:
    assert _snapshot(team_run.copy) == team_run.before, "the run wrote into the checkout"
    assert "Using workflow specific profile profiles/default" in team_run.output
    assert (team_run.workdir / ".snakemake").is_dir()
    text = read_json(team_run.workdir / "results" / "jfk" / "transcript.refined.json")["text"]
    assert normalize_text(text) == normalize_text(JFK_TEXT)
    short = read_json(team_run.scratch / "short" / "transcript.refined.json")
    assert "fellow americans" in normalize_text(short["text"])


WRITE_SNIPPET = """
import os, stat, sys
from pathlib import Path
from trax.io.jsonio import staging_dir, write_json_atomic, write_json_streamed, write_text_atomic
from trax.io.media import NormalizeOptions, normalize
out = Path(sys.argv[1])
write_json_atomic(out / "a" / "doc.json", {"x": 1})
write_text_atomic(out / "a" / "doc.txt", "x")
write_json_streamed(out / "a" / "list.json", "items", iter([1, 2]), dict)
normalize(sys.argv[2], out / "b" / "audio.wav", out / "b" / "audio.json", "jfk", NormalizeOptions())
staging_dir(out / "c" / "model")
for path in sorted(out.rglob("*")):
    print(oct(stat.S_IMODE(path.stat().st_mode)), "d" if path.is_dir() else "f", path.relative_to(out))
"""


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask-0022", "umask-0027"])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", WRITE_SNIPPET, str(out), str(JFK)], capture_output=True,
                          text=True, umask=umask, check=True)
    listed = [line.split(" ", 2) for line in proc.stdout.splitlines()]
    assert {name for _, _, name in listed} >= {"a/doc.json", "a/doc.txt", "a/list.json", "b/audio.wav", "b/audio.json"}
    assert len([kind for _, kind, _ in listed if kind == "d"]) == 4  # a, b, c and the staging folder
    assert [line for line in listed if int(line[0], 8) != (dir_mode if line[1] == "d" else file_mode)] == []


@pytest.mark.slow  # two workflow runs
def test_a_full_disk_names_the_file_and_a_rerun_is_identical(team_run) -> None:
    if not ROOT:
        pytest.skip("mounting a small tmpfs as results/ needs root")
    workdir = team_run.base / "full"
    results = workdir / "results"
    results.mkdir(parents=True)
    # 300 KiB: the short clip's outputs fit (~180 KiB), jfk's audio.wav (344 KiB) never does.
    if not _mount("-t", "tmpfs", "-o", "size=300k", "tmpfs", str(results)):
        pytest.skip("this root may not mount a tmpfs")
    config = workdir / "trax.yaml"
    config.write_text(yaml.safe_dump({"inputs": str(team_run.inputs)}), encoding="utf-8")
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        # One job at a time, so the failing file's partial WAV (removed at once) never shares the
        # disk with the other recording's writes.
        full = subprocess.run([*command, "--cores", "1", "--keep-going"], cwd=workdir, capture_output=True,
                              text=True, umask=0o022, env=env)
        output = full.stdout + full.stderr
        error = "trax: error: results/jfk/audio.wav: cannot write it: No space left on device"
        assert full.returncode != 0 and output.count(error) == 1, output[-4000:]
        assert error in (workdir / "logs" / "normalize" / "jfk.log").read_text(encoding="utf-8").splitlines()
        assert not any((results / "jfk").rglob("*")), "partial output of the failed recording"
        assert [p for p in results.rglob(".*")] == [], "temporary files left behind"
        assert (results / "short" / "merged.json").is_file() and (results / "short" / "transcript.srt").is_file()

        assert _mount("-o", "remount,size=64m", str(results))  # space freed
        rerun = subprocess.run([*command, "--cores", "2"], cwd=workdir, capture_output=True, text=True,
                               umask=0o022, env=env)
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
        # Byte-identical to the run that never lacked space (other umask, workdir and checkout).
        assert result_tree(results) == result_tree(team_run.scratch)
        assert {p: oct(m) for p, m in _modes(results, skip=set()).items()
                if m != (0o755 if (results / p).is_dir() else 0o644)} == {}
    finally:
        _stop_server(workdir)
        _umount(results)
