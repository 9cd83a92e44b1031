"""Batch of short recordings: the whole pipeline on the 26 dev clips, cold, per-rule job times.

Usage::

    .venv/bin/python bench/batch.py [--repeats 1] [--before PATH] [--server on|off|both] [--set SECTION.KEY=VALUE]

Runs the default workflow (every stage, model server on unless ``--server off``) with ``--cores 2``
on the dev category-a clips (26 real recordings, 1-29 s each, 180.6 s in all, from
../shared/benchdata), each run in a fresh directory with a fresh model server (cold: model loads
included). ``--before PATH`` also runs another checkout of Trax (e.g. a ``git worktree`` of an
older commit) with this same Python environment, in the same invocation, so the two columns are
comparable.

Prints, per checkout: total wall (median of repeats), Snakemake start-up (a zero-job rerun), jobs
run, model loads and server peak RSS; then one row per rule with the mean job wall time from
Snakemake's ``benchmark:`` records (a model job's time includes waiting for the server).
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

from trax.benchdata import wer_items  # noqa: E402
from trax.samples import sample_id_from_name  # noqa: E402


def run_snakemake(checkout: Path, workdir: Path) -> float:
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(checkout / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--quiet", "all"]
    # The checkout's own trax package, also inside the Snakemake process.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(checkout / "src")}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def server_call(checkout: Path, workdir: Path, method: str) -> dict:
    code = f"import json; from trax.client import request; print(json.dumps(request({method!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(checkout / "src")})
    return yaml.safe_load(out.stdout)


def with_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with ``section.key=value`` settings applied (values parsed as YAML)."""
    for override in overrides:
        dotted, value = override.split("=", 1)
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = yaml.safe_load(value)
    return config


def measure(checkout: Path, sheet: Path, server_on: bool, overrides: list[str]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="trax-batch-"))
    config = with_overrides({"inputs": str(sheet), "server": {"enabled": server_on}}, overrides)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        wall = run_snakemake(checkout, workdir)
        startup = run_snakemake(checkout, workdir)
        rules: dict[str, list[float]] = {}
        for tsv in (workdir / "benchmarks").rglob("*.tsv"):
            rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
            rules.setdefault(rule, []).append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
        loads, peak = float("nan"), float("nan")
        if server_on:
            stats = server_call(checkout, workdir, "stats")
            loads = sum(m["loads"] for m in stats["models"])
            peak = stats["peak_rss_mb"]
            server_call(checkout, workdir, "shutdown")
        return {"wall": wall, "startup": startup, "jobs": sum(map(len, rules.values())), "loads": loads, "peak": peak,
                "rules": {rule: statistics.mean(times) for rule, times in rules.items()}}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--before", type=Path, default=None, help="another Trax checkout to run alongside")
    parser.add_argument("--server", choices=["on", "off", "both"], default="on")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for this checkout's runs (not --before's), e.g. transcribe_fast.batch_size=8")
    args = parser.parse_args()
    items = wer_items()
    sheet = Path(tempfile.mkdtemp(prefix="trax-batch-sheet-")) / "batch.tsv"
    sheet.write_text("id\tpath\n" + "".join(f"{sample_id_from_name(i.path)}\t{i.path}\n" for i in items))

    checkouts = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    servers = {"on": [True], "off": [False], "both": [True, False]}[args.server]
    variants = {f"{name}, server {'on' if on else 'off'}": (path, on) for name, path in checkouts.items() for on in servers}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (path, on) in variants.items():
            results[name].append(measure(path, sheet, on, args.set if path == REPO else []))

    print(f"{len(items)} files, --cores 2, cold, {args.repeats} repeat(s), medians; overrides: {args.set or 'none'}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'variant':24s} {'wall s':>7s} {'start-up s':>10s} {'jobs':>5s} {'loads':>6s} {'server peak MB':>14s}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "startup", "jobs", "loads", "peak")}
        print(f"{name:24s} {med['wall']:7.1f} {med['startup']:10.2f} {med['jobs']:5.0f} {med['loads']:6.0f} "
              f"{med['peak']:14.0f}")
    rules = sorted({rule for runs in results.values() for run in runs for rule in run["rules"]})
    print()
    print("mean job wall s per rule (Snakemake benchmark records)")
    print(f"{'rule':18s}" + "".join(f" {name:>24s}" for name in results))
    for rule in rules:
        cells = []
        for runs in results.values():
            values = [run["rules"][rule] for run in runs if rule in run["rules"]]
            cells.append(f" {statistics.median(values):24.2f}" if values else f" {'-':>24s}")
        print(f"{rule:18s}" + "".join(cells))


if __name__ == "__main__":
    main()
