"""The bundled example from a fresh clone: what a newcomer's `make run` costs once set up.

Usage::

    .venv/bin/python bench/example_run.py [--repeats 3]

Each run clones this checkout (committed state) into a new directory, links this venv into it, and
runs `snakemake --cores 2 --configfile config/example.yaml` there with a cold model server (the
clone's own), then shuts the server down. Prints each run's wall time and the welcome_meeting
diarize and transcribe_fast jobs' times (their `benchmark:` TSVs), and the medians. Issue 31's
targets: run <= 5 s, diarize job <= 3 s. The setup's one-time encoder export is not timed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import REPO, snakemake, stop_server


def job_seconds(workdir: Path, rule: str, sample: str = "welcome_meeting") -> float:
    with open(workdir / "benchmarks" / rule / f"{sample}.tsv", encoding="utf-8") as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="trax-example-") as tmp:
            clone = Path(tmp) / "trax"
            subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
            (clone / ".venv").symlink_to(REPO / ".venv")
            try:
                wall = snakemake(clone, clone / "config" / "example.yaml", 2, checkout=clone)
                rows.append((wall, job_seconds(clone, "diarize"), job_seconds(clone, "transcribe_fast")))
            finally:
                stop_server(clone, check=False)
    print("| run | wall s | diarize job s | transcribe_fast job s |\n|---|---|---|---|")
    for number, (wall, diarize, transcribe) in enumerate(rows, 1):
        print(f"| {number} | {wall:.2f} | {diarize:.2f} | {transcribe:.2f} |")
    print(f"| median | {statistics.median(r[0] for r in rows):.2f} | {statistics.median(r[1] for r in rows):.2f} | "
          f"{statistics.median(r[2] for r in rows):.2f} |")
    print(f"targets (issue 31): run <= 5 s: {statistics.median(r[0] for r in rows) <= 5}; "
          f"diarize job <= 3 s: {statistics.median(r[1] for r in rows) <= 3}")


if __name__ == "__main__":
    main()
