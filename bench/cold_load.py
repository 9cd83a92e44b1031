"""Cold model load: the embedded Whisper models loaded for int8 on CPU, from the packaged float16
weights (CTranslate2 quantizes them on every load) against the int8 copy (trax.asr.quantized).

Usage::

    .venv/bin/python bench/cold_load.py [--repeats 5] [--threads 2]

Each load runs in a fresh process (import done before the clock starts), the two variants
alternated; prints the median load time of each, and the one-time cost of making the copy in a
scratch cache. Rows and columns: bench/README.md, section "cold_load.py".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts this checkout's src first on sys.path

from trax.asr.models import EMBEDDED_MODELS, EMBEDDED_PREFIX, resolve_whisper
from trax.asr.quantized import int8_copy

#: One load in a fresh process: faster-whisper imported first, then the clock.
LOAD = r"""
import json, sys, time
from faster_whisper import WhisperModel
start = time.perf_counter()
WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[2]))
print(json.dumps(time.perf_counter() - start))
"""


def load_seconds(folder: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", LOAD, str(folder), str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| model | load from package weights s | load from int8 copy s | saved s | making the copy s |")
    print("|---|---|---|---|---|")
    for name in EMBEDDED_MODELS:
        source = resolve_whisper(EMBEDDED_PREFIX + name)
        with tempfile.TemporaryDirectory(prefix="trax-int8-") as scratch:
            started = time.perf_counter()
            copy = int8_copy(source.path, source.weights_sha256, cache=Path(scratch))
            making = time.perf_counter() - started
            package, copied = [], []
            for _ in range(args.repeats):
                package.append(load_seconds(source.path, args.threads))
                copied.append(load_seconds(copy, args.threads))
        before, after = statistics.median(package), statistics.median(copied)
        print(f"| {name} | {before:.3f} | {after:.3f} | {before - after:.3f} | {making:.2f} |")


if __name__ == "__main__":
    main()
