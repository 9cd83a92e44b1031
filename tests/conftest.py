"""Shared fixtures: paths to the real benchmark audio, generated bad inputs, Snakemake runner."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from trax.quality.benchdata import benchdata_dir
from trax.runtime.client import ServerDied, ServerUnavailable, request
from trax.io.media import find_ffmpeg

REPO = Path(__file__).resolve().parents[1]
BENCH = benchdata_dir()
JFK = BENCH / "faster-whisper" / "jfk.flac"
JFK_TEXT = (BENCH / "faster-whisper" / "jfk.txt").read_text(encoding="utf-8").strip() if BENCH.exists() else ""
EMPTY = BENCH / "pyannote-audio" / "debug" / "empty.wav"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def pytest_sessionstart(session: pytest.Session) -> None:
    if not (BENCH / "manifest.tsv").is_file():
        raise pytest.UsageError(f"benchmark audio not found at {BENCH} (set TRAX_BENCHDATA)")


def ffmpeg(*args: str) -> None:
    """Run the same ffmpeg binary Trax uses, to generate fixtures."""
    subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-y", *args], check=True)


#: Outputs that record wall-clock times and memory, so they differ between runs by design.
RUN_COST_FILES = {"metrics.json", "summary.tsv", "aggregate.tsv", "targets.tsv", "summary.html"}


def result_tree(root: Path, pattern: str = "*") -> dict[str, bytes]:
    """Bytes of every output under ``root`` matching ``pattern`` that must be reproducible."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))
            if p.is_file() and p.name not in RUN_COST_FILES}


def jobs_planned(run: "SnakemakeRun") -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table."""
    counts = {}
    for match in re.finditer(r"^(\w+)\s+(\d+)\s*$", run.output, flags=re.MULTILINE):
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


def reruns(run: "SnakemakeRun") -> set[str]:
    """Rules a dry run plans, apart from the report-side rules that follow every change (the review
    page is rebuilt whenever merged.json changes, as the figures are)."""
    return set(jobs_planned(run)) - {"all", "metrics", "figures", "summary", "evaluate", "review"}


@dataclass
class SnakemakeRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Workflow:
    """A Snakemake workflow run in its own directory with its own config file."""

    def __init__(self, workdir: Path, config: dict) -> None:
        self.workdir = workdir
        self.config_path = workdir / "test-config.yaml"
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def command(self, *args: str, cores: int = 2) -> list[str]:
        return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(self.workdir), "--configfile",
                str(self.config_path), "--cores", str(cores), *args]

    def run(self, *args: str, cores: int = 2, check: bool = True) -> SnakemakeRun:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.run(self.command(*args, cores=cores), capture_output=True, text=True, env=env,
                              cwd=self.workdir)
        run = SnakemakeRun(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake failed ({proc.returncode}):\n{run.output[-6000:]}")
        return run

    def result(self, sample_id: str, name: str) -> Path:
        return self.workdir / "results" / sample_id / name


    def server(self, method: str, params: dict | None = None):
        """Call the model server of this workflow directory."""
        with in_dir(self.workdir):
            return request(method, params)

    def stop_server(self) -> None:
        with in_dir(self.workdir), contextlib.suppress(ServerUnavailable, ServerDied):
            request("shutdown")


@contextlib.contextmanager
def in_dir(path: Path):
    """Run client calls in ``path`` (the client talks to the server of its working directory)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture
def make_workflow(tmp_path: Path):
    created: list[Workflow] = []

    def factory(inputs, name: str = "wf", **sections) -> Workflow:
        workdir = tmp_path / name
        workdir.mkdir()
        workflow = Workflow(workdir, {"inputs": inputs, **sections})
        created.append(workflow)
        return workflow

    yield factory
    for workflow in created:
        workflow.stop_server()


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated bad (and borderline) inputs, keyed by what is wrong with them."""
    root = tmp_path_factory.mktemp("bad")
    files = {
        "missing": root / "missing.wav",
        "text_as_mp3": root / "notes.mp3",
        "zero_bytes": root / "zero.wav",
        "no_audio": root / "video_only.mp4",
        "oversized": root / "oversized.wav",
        "too_short": root / "blip.wav",
    }
    files["text_as_mp3"].write_text("This is a text file, not audio.\n" * 20)
    files["zero_bytes"].write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-t", "1", "-pix_fmt", "yuv420p", str(files["no_audio"]))
    # 2 MB of white noise: over a 1 MB limit set by the tests.
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=65:c=white:r=16000:a=0.1", "-ac", "1", str(files["oversized"]))
    ffmpeg("-i", str(JFK), "-t", "0.05", str(files["too_short"]))
    return files


@pytest.fixture(scope="session")
def good_extras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated inputs that must work: a 0.5 s clip, a video with audio, an 8 kHz file."""
    root = tmp_path_factory.mktemp("good")
    files = {
        "half_second": root / "half second.wav",
        "video": root / "jfk video.mp4",
    }
    # "And so" is spoken in the first half second of jfk... after 0.3 s of silence; take 0.3-0.8 s.
    ffmpeg("-ss", "0.3", "-t", "0.5", "-i", str(JFK), str(files["half_second"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-i", str(JFK), "-shortest",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(files["video"]))
    return files


SAMPLE_DIR = BENCH / "pyannote-audio" / "sample"


@pytest.fixture(scope="session")
def sample_fast_transcript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transcript.fast.json of pyannote's sample.wav (two speakers, 30 s), decoded in-process once."""
    from trax.asr.transcribe import transcribe_file

    path = tmp_path_factory.mktemp("sample") / "transcript.fast.json"
    settings = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["transcribe_fast"]
    transcribe_file(str(SAMPLE_DIR / "sample.wav"), str(path), "sample", settings)
    return path


#: Review thresholds low enough that the bundled example has utterances flagged for review (with
#: the defaults its clean synthetic speech has none), so the review page shows some.
EXAMPLE_QUALITY = {"review_utterance_wer": 0.045}


@pytest.fixture(scope="session")
def example_workflow(tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """One workflow run of `make run`'s example (config/example.yaml: Alice and Bob enrolled),
    shared by the tests that only read its results (copy it before changing anything)."""
    example = yaml.safe_load((REPO / "config" / "example.yaml").read_text(encoding="utf-8"))
    workdir = tmp_path_factory.mktemp("example") / "wf"
    workdir.mkdir()
    workflow = Workflow(workdir, {"inputs": str(REPO / "resources" / "example"), "quality": EXAMPLE_QUALITY,
                                  "speakers": {"profiles": str(REPO / example["speakers"]["profiles"])}})
    try:
        workflow.run()
    finally:
        workflow.stop_server()
    return workflow
