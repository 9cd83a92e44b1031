"""Hours-long recordings: wall time, real-time factor and peak memory per stage, 10 min to 4 h.

Usage::

    .venv/bin/python bench/long.py                      # 10 min, 1 h, 4 h (the 4 h run takes a while)
    .venv/bin/python bench/long.py --minutes 10,60      # a subset
    .venv/bin/python bench/long.py --set refine.enabled=true --server-profile   # overrides; server RSS

Each recording is real speech from ../shared/benchdata joined to the exact length
(:func:`trax.quality.benchdata.build_long_recording`), run through the default workflow cold.
Prints one row per stage and per recording (wall s, RTF, peak RSS MB), process peaks, and
issue 16's targets (``--server-profile``: the server's RSS sampled each second, median and max
per tenth of each run); each run's console output is kept in ``bench/out/long-<min>min.log``.
The recordings, the table's rows and the targets: bench/README.md, section "long.py".
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import yaml
from common import OUT, snakemake_command, stop_server, with_overrides

from trax.io.jsonio import read_json
from trax.io.media import decode_command, find_ffmpeg
from trax.io.provenance import sha256_file
from trax.quality.benchdata import build_long_recording

GNU_TIME = "/usr/bin/time"
STAGES = ["normalize", "transcribe_fast", "refine", "diarize", "merge", "export", "enhance", "figures", "metrics", "summary"]


def benchmark(workdir: Path, rule: str) -> tuple[float, float] | None:
    """(wall s, max_rss MB) of the rule's one job, or None when it did not run."""
    files = sorted((workdir / "benchmarks" / rule).glob("*.tsv"))
    if not files:
        files = sorted((workdir / "benchmarks").glob(f"{rule}*.tsv"))
    if not files:
        return None
    with open(files[0], encoding="utf-8") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    rss = row.get("max_rss", "NA")
    return float(row["s"]), float(rss) if rss not in ("NA", "-", "") else 0.0


def peak_rss_mb(command: list[str], **popen: Any) -> float:
    """Run ``command`` to the end; return the kernel's high-water RSS in MB of it and of every
    process it waited for (the model server outlives the workflow and is not one of them).

    Measured by GNU time (``/usr/bin/time``, Debian package ``time``): a process's ``ru_maxrss``
    starts at the size of the process that forked it, so it must be forked by a small one.

    Raises:
        subprocess.CalledProcessError: when the command fails.
    """
    if not Path(GNU_TIME).exists():
        sys.exit(f"bench/long.py: {GNU_TIME} not found (apt-get install time)")
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *command], check=True, **popen)
        return int(report.read().split()[-1]) / 1024


class ServerSampler:
    """Samples the RSS (MB) of the model server serving ``workdir`` once a second, in a thread."""

    def __init__(self, workdir: Path) -> None:
        self.marker = f"--workdir {workdir} ".encode()
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and self.marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                        line = next(x for x in (proc / "status").read_text().splitlines() if x.startswith("VmRSS:"))
                        self.samples.append(int(line.split()[1]) / 1024)
                except (OSError, StopIteration):
                    continue

    def tenths(self) -> list[tuple[float, float]]:
        """(median, max) of each tenth of the samples."""
        size = max(1, len(self.samples) // 10)
        parts = [sorted(self.samples[i:i + size]) for i in range(0, len(self.samples), size)][:10]
        return [(part[len(part) // 2], part[-1]) for part in parts if part]


def run(minutes: int, cores: int, clips: Path, overrides: list[str],
        profile: dict[int, list[tuple[float, float]]] | None = None) -> dict[str, tuple[float, float]]:
    label = f"long-{minutes}min"
    audio = build_long_recording(OUT / f"{label}.wav", minutes * 60.0, clips)
    workdir = Path(tempfile.mkdtemp(prefix=f"trax-{label}-"))
    try:
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(with_overrides({"inputs": str(audio)}, overrides)), encoding="utf-8")
        command = snakemake_command(workdir, config, cores)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        ffmpeg_peak = peak_rss_mb(decode_command(audio, workdir / "decoded.wav").compile(
            cmd=find_ffmpeg().ffmpeg, overwrite_output=True))
        (workdir / "decoded.wav").unlink()
        start = time.perf_counter()
        with open(OUT / f"{label}.log", "w", encoding="utf-8") as console, ServerSampler(workdir) as sampler:
            snakemake_peak = peak_rss_mb(command, stdout=console, stderr=subprocess.STDOUT, env=env)
        if profile is not None:
            profile[minutes] = sampler.tenths()
        wall = time.perf_counter() - start
        (metrics_path,) = (workdir / "results").glob("*/metrics.json")
        for transcript in sorted((workdir / "results").glob("*/transcript.*.json")):  # same bytes before / after a change
            print(f"{minutes} min {transcript.name}: sha256 {sha256_file(transcript)[:16]}", flush=True)
        metrics = read_json(metrics_path)
        rows = {stage: value for stage in STAGES if (value := benchmark(workdir, stage)) is not None}
        server = (metrics.get("model_server") or {}).get("peak_rss_mb", 0.0)
        rows["snakemake process"] = (0.0, snakemake_peak)
        rows["ffmpeg (normalize)"] = (0.0, ffmpeg_peak)
        rows["model server"] = (0.0, float(server))
        rows["workflow"] = (wall, snakemake_peak + float(server))
        stop_server(workdir, check=False)
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="10,60,240", help="recording lengths in minutes, comma-separated")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, e.g. refine.enabled=true (repeatable)")
    parser.add_argument("--server-profile", action="store_true",
                        help="print the model server's RSS (median, max) per tenth of each run")
    args = parser.parse_args()
    lengths = [int(m) for m in args.minutes.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    clips = OUT / "long-clips"
    clips.mkdir(exist_ok=True)
    results = {}
    profile: dict[int, list[tuple[float, float]]] | None = {} if args.server_profile else None
    for minutes in lengths:
        before = os.getloadavg()
        results[minutes] = run(minutes, args.cores, clips, args.set, profile)
        after = os.getloadavg()
        print(f"{minutes} min done: load average before {before[0]:.2f}, after {after[0]:.2f} (1-min)", flush=True)

    settings = "overrides " + " ".join(args.set) if args.set else "default config"
    print(f"\n--cores {args.cores}; {settings}; cold (fresh directory and model server per recording)")
    header = "| stage | " + " | ".join(f"{m} min wall s | RTF | peak RSS MB" for m in lengths) + " |"
    print(header)
    print("|" + "---|" * (1 + 3 * len(lengths)))
    for stage in [*STAGES, "snakemake process", "ffmpeg (normalize)", "model server", "workflow"]:
        cells = []
        for minutes in lengths:
            wall, rss = results[minutes].get(stage, (0.0, 0.0))
            cells.append(f"{wall:.1f} | {wall / (minutes * 60):.4f} | {rss:.0f}" if wall else f"- | - | {rss:.0f}")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    if len(lengths) > 1:
        short, long = lengths[0], lengths[-1]
        ratio = results[long]["workflow"][0] / results[short]["workflow"][0]
        print(f"\nwall({long} min) / wall({short} min) = {ratio:.2f} for {long / short:.0f}x the audio "
              f"(target <= {1.1 * long / short:.1f})")
        for stage, (_, rss) in results[long].items():
            base = results[short].get(stage, (0.0, 0.0))[1]
            if rss and base:
                print(f"  {stage}: peak {rss:.0f} MB vs {base:.0f} MB ({100 * (rss / base - 1):+.1f} %)")
        d_short = results[short]["diarize"][0] / (short * 60)
        d_long = results[long]["diarize"][0] / (long * 60)
        print(f"diarize RTF {d_long:.4f} vs {d_short:.4f} ({d_long / d_short:.2f}x, target <= 1.2x)")
    if profile:
        print("\nmodel server RSS MB per tenth of the run, median / max (sampled every second)")
        print("| minutes | " + " | ".join(f"{k + 1}/10" for k in range(10)) + " |")
        print("|---|" + "---|" * 10)
        for minutes, tenths in profile.items():
            print(f"| {minutes} | " + " | ".join(f"{median:.0f} / {peak:.0f}" for median, peak in tenths) + " |")


if __name__ == "__main__":
    main()
