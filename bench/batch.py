"""Batch of short recordings: model server on vs off.

Usage::

    .venv/bin/python bench/batch.py [--repeats 1]

Runs the workflow (normalize + transcribe_fast) with ``--cores 2`` on the dev category-a clips
(26 real recordings, 1-29 s each, from ../shared/benchdata) in a fresh directory per run, for:

* ``server off`` — every transcribe job imports faster-whisper and loads tiny.en itself;
* ``server on (W workers x T threads)`` — jobs send work to the model server.

Columns: total wall time, Snakemake start-up (a zero-job rerun), wall per file after start-up,
mean ``transcribe_fast`` job time (Snakemake benchmark), model loads (server ``stats``; one per job
when off), server peak RSS, and speed-up over ``server off``.
"""

from __future__ import annotations

import argparse
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

from fast_pass import media_duration  # noqa: E402
from trax.benchdata import wer_items  # noqa: E402
from trax.samples import sample_id_from_name  # noqa: E402

VARIANTS = {
    "server off": {"enabled": False},
    "server on (2 workers x 1 thread)": {"enabled": True, "workers": 2, "cpu_threads": 1},
    "server on (1 worker x 2 threads)": {"enabled": True, "workers": 1, "cpu_threads": 2},
    "server on (2 workers x 2 threads)": {"enabled": True, "workers": 2, "cpu_threads": 2},
}


def run_snakemake(workdir: Path) -> float:
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--quiet", "all"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return time.perf_counter() - start


def server_call(workdir: Path, method: str) -> dict:
    code = f"import json; from trax.client import request; print(json.dumps(request({method!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, capture_output=True, text=True)
    return yaml.safe_load(out.stdout)


def measure(sheet: Path, server: dict, files: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="trax-batch-"))
    (workdir / "config.yaml").write_text(yaml.safe_dump({"inputs": str(sheet), "server": server}))
    wall = run_snakemake(workdir)
    startup = run_snakemake(workdir)
    jobs = [pd.read_csv(p, sep="\t")["s"].iloc[0] for p in (workdir / "benchmarks" / "transcribe_fast").glob("*.tsv")]
    loads, peak = files, float("nan")
    if server["enabled"]:
        stats = server_call(workdir, "stats")
        loads = sum(m["loads"] for m in stats["models"])
        peak = stats["peak_rss_mb"]
        server_call(workdir, "shutdown")
    shutil.rmtree(workdir)
    return {"wall": wall, "startup": startup, "per_file": (wall - startup) / files, "job": statistics.mean(jobs),
            "loads": loads, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default=None, help="run only the variants whose name contains this text")
    args = parser.parse_args()
    items = wer_items()
    sheet = Path(tempfile.mkdtemp(prefix="trax-batch-sheet-")) / "batch.tsv"
    sheet.write_text("id\tpath\n" + "".join(f"{sample_id_from_name(i.path)}\t{i.path}\n" for i in items))
    audio_s = sum(media_duration(i.path) for i in items)

    variants = {n: v for n, v in VARIANTS.items() if args.only is None or args.only in n or n == "server off"}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, server in variants.items():
            results[name].append(measure(sheet, server, len(items)))

    off = statistics.median(r["wall"] for r in results["server off"])
    print(f"{len(items)} files, {audio_s:.1f} s of audio, --cores 2, {args.repeats} repeat(s), medians")
    print(f"{'variant':34s} {'wall s':>7s} {'start-up s':>10s} {'s/file':>7s} {'job s':>6s} {'loads':>6s} "
          f"{'server peak RSS MB':>18s} {'speed-up':>8s}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        peak = "-" if med["peak"] != med["peak"] else f"{med['peak']:.0f}"
        print(f"{name:34s} {med['wall']:7.1f} {med['startup']:10.2f} {med['per_file']:7.2f} {med['job']:6.2f} "
              f"{med['loads']:6.0f} {peak:>18s} {off / med['wall']:7.2f}x")


if __name__ == "__main__":
    main()
