"""Speaker-attributed accuracy of merged.json on pyannote's sample.wav (two speakers, 30 s).

Usage::

    .venv/bin/python bench/merge.py [--keep DIR]

Runs the workflow (``--cores 2``, server off, default config) on ``pyannote-audio/sample/sample.wav``,
then merges each transcript (fast / refined) with each diarization (the embedded diarizer's, and
the reference ``sample.rttm`` as an oracle) using the default ``merge`` settings. Rows the
workflow cannot build yet are left out, with a note on stderr. Columns: cpWER, WER, speaker
agreement with the reference RTTM and with the STM, words, unassigned words.

Columns in detail: bench/README.md, section "merge.py".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import REPO, snakemake_command
from meeteval.wer.wer.cp import cp_word_error_rate
from scipy.optimize import linear_sum_assignment

from trax.io.annotation import Turn, rttm_turns
from trax.io.jsonio import read_json
from trax.quality.benchdata import benchdata_dir
from trax.quality.evaluation import corpus_wer, normalize_text
from trax.transcript.merge import MergeOptions, assign_word, merge_files

SAMPLE = benchdata_dir() / "pyannote-audio" / "sample"


def read_stm(path: Path) -> list[tuple[str, float, float, str]]:
    """(speaker, start, end, text) per STM line."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and not line.startswith(";;"):
            rows.append((fields[2], float(fields[3]), float(fields[4]), fields[5]))
    return rows


def _words(merged: dict) -> list[dict]:
    return [w for u in merged["utterances"] for w in u["words"]]


def cpwer(merged: dict, stm: list) -> tuple[float, float]:
    reference: dict[str, list[str]] = {}
    for speaker, _, _, text in stm:
        reference.setdefault(speaker, []).append(text)
    hypothesis: dict[str, list[str]] = {}
    for word in _words(merged):
        hypothesis.setdefault(word["speaker"], []).append(word["word"])
    ref = {s: normalize_text(" ".join(t)) for s, t in reference.items()}
    hyp = {s: normalize_text(" ".join(t)) for s, t in hypothesis.items()}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # meeteval's notes
        cp = cp_word_error_rate(ref, hyp)
    plain = corpus_wer([normalize_text(" ".join(t for *_, t in stm))],
                       [normalize_text(" ".join(w["word"] for w in _words(merged)))])
    return float(cp.error_rate), float(plain.wer)


def speaker_match(merged: dict, reference_of) -> float:
    """Share of words whose (optimally mapped) speaker equals ``reference_of(word)``."""
    pairs = [(w["speaker"], reference_of(w)) for w in _words(merged)]
    hyps = sorted({h for h, _ in pairs})
    refs = sorted({r for _, r in pairs if r is not None})
    counts = Counter(pairs)
    matrix = np.array([[counts[(h, r)] for r in refs] for h in hyps]) if hyps and refs else np.zeros((1, 1))
    rows, cols = linear_sum_assignment(-matrix)
    return float(matrix[rows, cols].sum()) / max(1, len(pairs))


def rttm_speaker(turns: list[Turn]):
    options = MergeOptions()
    return lambda word: assign_word(word["start"], word["end"], turns, options)[0]


def stm_speaker(stm: list):
    def of(word: dict) -> str:
        middle = (word["start"] + word["end"]) / 2
        return min(stm, key=lambda row: max(0.0, row[1] - middle, middle - row[2]))[0]
    return of


def run_workflow(workdir: Path) -> set[str]:
    """Build what the workflow can of transcript.fast/refined.json and diarization.rttm (issues 5 and
    7 add the refine and diarize rules); returns the names built."""
    (workdir / "samples.tsv").write_text(f"id\tpath\nsample\t{SAMPLE / 'sample.wav'}\n", encoding="utf-8")
    (workdir / "config.yaml").write_text("inputs: samples.tsv\nserver: {enabled: false}\n", encoding="utf-8")
    command = snakemake_command(workdir, workdir / "config.yaml")
    # Snakemake itself imports trax (common.smk): this checkout's, not an installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.getenv("PYTHONPATH")]))}
    targets = [name for name in ("transcript.fast.json", "transcript.refined.json", "diarization.rttm")
               if subprocess.run([*command, "-n", f"results/sample/{name}"], capture_output=True,
                                 cwd=workdir, env=env).returncode == 0]
    missing = {"transcript.refined.json", "diarization.rttm"} - set(targets)
    if missing:
        print(f"the workflow cannot build {', '.join(sorted(missing))} yet: those rows are left out", file=sys.stderr)
    subprocess.run([*command, *(f"results/sample/{name}" for name in targets)], check=True, capture_output=True,
                   cwd=workdir, env=env)
    return set(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="trax-bench-merge-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stm = read_stm(SAMPLE / "sample.stm")
    reference_turns = rttm_turns(SAMPLE / "sample.rttm")
    results = workdir / "results" / "sample"
    try:
        built = run_workflow(workdir)
        diarizations = [("embedded", results / "diarization.rttm")] if "diarization.rttm" in built else []
        diarizations.append(("oracle (reference RTTM)", SAMPLE / "sample.rttm"))
        print("| transcript | diarization | cpWER | WER | spk=RTTM | spk=STM | words | unassigned |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for kind in ("fast", "refined"):
            if f"transcript.{kind}.json" not in built:
                continue
            for label, rttm in diarizations:
                out = workdir / f"merged.{kind}.{label.split()[0]}.json"
                merge_files(str(results / f"transcript.{kind}.json"), str(rttm), str(out), {})
                merged = read_json(out)
                cp, plain = cpwer(merged, stm)
                print(f"| {kind} | {label} | {cp:.1%} | {plain:.1%} "
                      f"| {speaker_match(merged, rttm_speaker(reference_turns)):.1%} "
                      f"| {speaker_match(merged, stm_speaker(stm)):.1%} | {merged['stats']['words']} "
                      f"| {merged['stats']['assignment']['unassigned']} |")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
