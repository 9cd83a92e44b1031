"""End to end: the whole workflow on a 5-minute recording vs bare faster-whisper (the floor).

Usage::

    .venv/bin/python bench/end_to_end.py [--repeats 3] [--cores 2] [--set SECTION.KEY=VALUE]

The recording: real speech from ../shared/benchdata concatenated with ffmpeg's ``concat`` filter
(each part resampled to 16 kHz mono first), cut at exactly 300 s: columbia.16k.wav (one speaker,
198.8 s), then the multi-speaker AMI excerpts pyannote-audio/sample/sample.wav and
debug/dev00.wav, dev01.wav, trn01.wav… until 300 s are filled. So the run transcribes one long
monologue and then meetings with 2-4 speakers.

Rows (medians over ``--repeats`` runs, each a fresh directory and a fresh model server, i.e. a
cold start including model loads):

* ``workflow end to end`` — ``snakemake --cores N`` with the default config (every stage the
  workflow has, offline defaults, model server on) from nothing to the summary tables.
* one row per stage — that job's wall time from Snakemake's ``benchmark:`` record (stages run
  side by side where the DAG allows, so they add up to more than the end-to-end time).
* ``bare faster-whisper tiny.en`` — one Python process: import, load tiny.en, transcribe with the
  workflow's fast-pass settings (the floor for the transcription alone).

Peak RSS: for the workflow, the largest job's peak plus the model server's peak (both from
``metrics.json``); for the bare run, the process's own peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from batch import with_overrides
from fast_pass import BARE, REPO, snakemake, stop_server

from trax.benchdata import benchdata_dir
from trax.jsonio import read_json
from trax.media import find_ffmpeg

TARGET_S = 300.0
#: Parts in order; the last one is cut so the total is exactly TARGET_S.
PARTS = [
    "const-me-whisper/columbia.16k.wav",
    "pyannote-audio/sample/sample.wav",
    "pyannote-audio/debug/dev00.wav",
    "pyannote-audio/debug/dev01.wav",
    "pyannote-audio/debug/trn01.wav",
    "pyannote-audio/debug/trn04.wav",
]
SAMPLE_ID = "five_minutes"


def build_recording(destination: Path) -> Path:
    """Concatenate PARTS (16 kHz mono) and cut at TARGET_S seconds."""
    sources = [benchdata_dir() / part for part in PARTS]
    command = [find_ffmpeg().ffmpeg, "-v", "error", "-y"]
    for source in sources:
        command += ["-i", str(source)]
    resampled = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(sources)))
    joined = "".join(f"[a{i}]" for i in range(len(sources)))
    command += ["-filter_complex", f"{resampled}{joined}concat=n={len(sources)}:v=0:a=1[out]", "-map", "[out]",
                "-t", str(TARGET_S), "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", "-bitexact", str(destination)]
    destination.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)
    return destination


def run_workflow(audio: Path, cores: int, overrides: list[str]) -> tuple[float, dict]:
    workdir = Path(tempfile.mkdtemp(prefix="trax-e2e-"))
    try:
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(with_overrides({"inputs": str(audio)}, overrides)))
        wall = snakemake(workdir, config, cores=cores)
        metrics = read_json(workdir / "results" / SAMPLE_ID / "metrics.json")
        stop_server(workdir)
        return wall, metrics
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="workflow config override, e.g. transcribe_fast.batch_size=8")
    args = parser.parse_args()

    audio = build_recording(REPO / "bench" / "out" / f"{SAMPLE_ID}.wav")
    settings = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["transcribe_fast"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    walls, peaks, bare_walls, bare_peaks = [], [], [], []
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        wall, metrics = run_workflow(audio, args.cores, args.set)
        walls.append(wall)
        peaks.append(metrics["peak_rss_mb"])
        for stage, values in metrics["stages"].items():
            stages.setdefault(stage, []).append(values["wall_s"])
        bare = json.loads(subprocess.run([sys.executable, "-c", BARE, str(audio), json.dumps(settings)],
                                         check=True, capture_output=True, text=True, env=env).stdout)
        bare_walls.append(bare["wall"])
        bare_peaks.append(bare["rss_mb"])

    print(f"audio: {audio.name}, {TARGET_S:.0f} s ({' + '.join(Path(p).name for p in PARTS)}, cut at {TARGET_S:.0f} s)")
    print(f"overrides: {args.set or 'none'}")
    print(f"--cores {args.cores}; {args.repeats} repeats, medians; cold start each time (fresh directory and model server)")
    print(f"{'row':34s} {'wall s':>8s} {'RTF':>7s} {'peak RSS MB':>12s}")
    wall = statistics.median(walls)
    print(f"{'workflow end to end':34s} {wall:8.2f} {wall / TARGET_S:7.3f} {statistics.median(peaks):12.0f}")
    for stage, values in stages.items():
        stage_wall = statistics.median(values)
        print(f"{'  ' + stage:34s} {stage_wall:8.2f} {stage_wall / TARGET_S:7.3f} {'':>12s}")
    bare = statistics.median(bare_walls)
    print(f"{'bare faster-whisper tiny.en':34s} {bare:8.2f} {bare / TARGET_S:7.3f} {statistics.median(bare_peaks):12.0f}")
    ratio = wall / bare
    print(f"targets (issue 12): end to end <= 12 s: {'pass' if wall <= 12.0 else 'fail'} ({wall:.2f} s); "
          f"<= 0.6x bare: {'pass' if ratio <= 0.6 else 'fail'} ({ratio:.2f}x); "
          f"peak RSS <= 1.5 GB: {'pass' if statistics.median(peaks) <= 1536 else 'fail'}")


if __name__ == "__main__":
    main()
