"""The 26 dev clips under Slurm next to a local run, on the same machine, one run each.

Usage::

    .venv/bin/python bench/slurm.py [--target fast|all]

Needs a Slurm cluster whose nodes share this directory; without one it starts the local one-node
cluster (``scripts/local_slurm.sh``, root) and stops it afterwards. ``local`` runs ``--cores 2``,
``slurm`` runs ``--workflow-profile profiles/slurm``; ``--target fast`` (default) builds
``transcript.fast.json`` only, ``all`` the whole workflow. Prints wall time, jobs, rule times,
Slurm job and queue times and model loads; the two runs' outputs are compared byte for byte.

Runs and columns in detail: bench/README.md, section "slurm.py".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from common import REPO, server_call, snakemake_command, write_sheet

from trax.io.samples import sample_id_from_name
from trax.quality.benchdata import wer_items

CLUSTER = REPO / "scripts" / "local_slurm.sh"


def snakemake(workdir: Path, targets: list[str], *args: str) -> tuple[float, str]:
    command = [*snakemake_command(workdir, workdir / "config.yaml"), *args, *targets]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return wall, proc.stdout + proc.stderr


def rule_times(workdir: Path) -> list[float]:
    return [float(pd.read_csv(p, sep="\t")["s"].iloc[0]) for p in (workdir / "benchmarks").rglob("*.tsv")]


def slurm_times(job_ids: list[str]) -> tuple[list[float], list[float]]:
    """(run seconds, queue-wait seconds) per job from scontrol (1 s resolution)."""
    run, wait = [], []
    for job_id in job_ids:
        text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S*)", text))
        submit, start, end = (datetime.fromisoformat(fields[k]) for k in ("SubmitTime", "StartTime", "EndTime"))
        run.append((end - start).total_seconds())
        wait.append((start - submit).total_seconds())
    return run, wait


def measure(name: str, sheet: Path, targets: list[str], *args: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"trax-bench-{name}-"))
    (workdir / "config.yaml").write_text(yaml.safe_dump({"inputs": str(sheet)}))
    wall, output = snakemake(workdir, targets, *args)
    rules = rule_times(workdir)
    result = {"name": name, "workdir": workdir, "wall": wall, "jobs": len(rules), "rule": statistics.mean(rules)}
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    if job_ids:
        run, wait = slurm_times(job_ids)
        result.update(jobs=len(job_ids), slurm_run=statistics.mean(run), slurm_wait=statistics.mean(wait))
    stats = server_call(workdir, "stats")
    result["loads"] = sum(model["loads"] for model in stats["models"])
    server_call(workdir, "shutdown")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["fast", "all"], default="fast")
    args = parser.parse_args()
    items = wer_items()
    ids = [sample_id_from_name(item.path) for item in items]
    sheet = write_sheet(items, "trax-bench-sheet-")
    targets = ["all"] if args.target == "all" else [f"results/{i}/transcript.fast.json" for i in ids]

    started = False
    if subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        subprocess.run([str(CLUSTER), "start"], check=True)
        started = True
    try:
        local = measure("local", sheet, targets)
        slurm = measure("slurm", sheet, targets, "--workflow-profile", str(REPO / "profiles" / "slurm"))
    finally:
        if started:
            subprocess.run([str(CLUSTER), "stop"], check=True)

    identical = all((local["workdir"] / "results" / i / name).read_bytes() == (slurm["workdir"] / "results" / i / name).read_bytes()
                    for i in ids for name in ("audio.wav", "audio.json", "transcript.fast.json"))
    load = os.getloadavg()
    print(f"{len(items)} files, target {args.target}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"outputs byte-identical: {identical}")
    print(f"{'run':6s} {'wall s':>7s} {'jobs':>5s} {'rule s':>7s} {'slurm job s':>11s} {'queue s':>8s} {'loads':>6s}")
    for r in (local, slurm):
        extra = f"{r['slurm_run']:11.1f} {r['slurm_wait']:8.1f}" if "slurm_run" in r else f"{'-':>11s} {'-':>8s}"
        print(f"{r['name']:6s} {r['wall']:7.1f} {r['jobs']:5d} {r['rule']:7.2f} {extra} {r['loads']:6d}")
    print(f"slurm / local wall: {slurm['wall'] / local['wall']:.1f}x")
    for r in (local, slurm):
        shutil.rmtree(r["workdir"])


if __name__ == "__main__":
    main()
