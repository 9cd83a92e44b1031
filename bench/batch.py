"""Batch of short recordings: the whole pipeline on the 26 dev clips, cold, per-rule job times.

Usage::

    .venv/bin/python bench/batch.py [--repeats 1] [--before PATH] [--server on|off|both] [--set SECTION.KEY=VALUE]

Runs the default workflow (``--cores 2``, model server on unless ``--server off``) on the dev
category-a clips, each run cold in a fresh directory. ``--before PATH`` also runs another Trax
checkout with this same Python environment, so the two columns are comparable. Prints, per
checkout: total wall, Snakemake start-up, jobs, model loads and server peak RSS; then the mean
job wall time per rule.

Inputs and columns in detail: bench/README.md, section "batch.py".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from common import REPO, server_call, snakemake, with_overrides, write_sheet

from trax.quality.benchdata import wer_items


def run_snakemake(checkout: Path, workdir: Path) -> float:
    # The checkout's own trax package, also inside the Snakemake process.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(checkout / "src")}
    return snakemake(workdir, workdir / "config.yaml", 2, "all", checkout=checkout, env=env)


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
            stats = server_call(workdir, "stats", checkout)
            loads = sum(m["loads"] for m in stats["models"])
            peak = stats["peak_rss_mb"]
            server_call(workdir, "shutdown", checkout)
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
    sheet = write_sheet(items, "trax-batch-sheet-")

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
