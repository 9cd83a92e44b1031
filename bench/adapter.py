"""LoRA domain adapter: WER before and after adaptation on LJ Speech, with training time and memory.

Usage::

    .venv/bin/python bench/adapter.py [--models embedded:tiny.en embedded:base] [--variants full decoder]

Trains on LJ001-0001…0008 and scores LJ001-0009…0016 (../shared/benchdata/coqui-tts-ljspeech).
Each (model, variant) runs in its own process (``--single``) so peak RSS is its own; variants
``full`` (LoRA on every attention block, encoder too) and ``decoder`` (decoder attention only).
Columns: training and whole-job wall time, peak RSS, held-out WER greedy and with beam 5,
before → after.

Data, variants and columns in detail: bench/README.md, section "adapter.py".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts this checkout's src/ first on sys.path)

from trax.quality.benchdata import benchdata_dir

TRAIN = range(1, 9)
TEST = range(9, 17)
VARIANTS = {"full": {}, "decoder": {"train_encoder": False}}


def lj(n: int) -> Path:
    return benchdata_dir() / "coqui-tts-ljspeech" / "wavs" / f"LJ001-{n:04d}.wav"


def write_dataset(path: Path) -> Path:
    rows = ["audio\ttext\tsplit"]
    for numbers, split in ((TRAIN, "train"), (TEST, "validation")):
        rows += [f"{lj(n)}\t{lj(n).with_suffix('.txt').read_text(encoding='utf-8').strip()}\t{split}" for n in numbers]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def beam_wer(model_dir: Path) -> float:
    """Held-out WER with the transcribe defaults (int8, beam 5), as refinement would decode."""
    from trax.quality.evaluation import corpus_wer
    from trax.asr.models import resolve_whisper
    from trax.asr.transcribe import TranscribeOptions, load_wav, load_whisper, transcribe_audio
    from trax.process import pin_blas_threads

    pin_blas_threads()
    options = TranscribeOptions(model=str(model_dir), language="en", word_timestamps=False)
    model = load_whisper(resolve_whisper(str(model_dir)), options)
    hypotheses, references = [], []
    with tempfile.TemporaryDirectory() as tmp:
        from trax.io.media import decode_to_wav

        for n in TEST:
            wav = Path(tmp) / f"{n}.wav"
            decode_to_wav(lj(n), wav)
            segments, _, _, _ = transcribe_audio(model, load_wav(wav), options)
            hypotheses.append(" ".join(s.text for s in segments))
            references.append(lj(n).with_suffix(".txt").read_text(encoding="utf-8"))
    return corpus_wer(references, hypotheses).wer


def single(model: str, variant: str, workdir: Path) -> dict:
    """Train, build and score one (model, variant); returns the row as a dict."""
    import logging
    import re

    from trax.asr.adapters import build_adapted_model, train_adapter
    from trax.asr.models import resolve_whisper

    log_path = workdir / "train.log"
    logging.basicConfig(filename=log_path, level=logging.INFO, format="%(message)s", force=True)
    settings = {"model": model, **VARIANTS[variant]}
    started = time.perf_counter()
    metrics = train_adapter(write_dataset(workdir / "lj.tsv"), workdir / "lora", workdir / "metrics.json", "lj", settings)
    job_s = time.perf_counter() - started
    train_s = float(re.findall(r"trained \d+ steps in ([\d.]+) s", log_path.read_text())[-1])
    adapted = build_adapted_model(workdir / "lora", workdir / "ct2", settings)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model,
        "variant": variant,
        "steps": metrics["training"]["steps"],
        "train_s": round(train_s, 1),
        "job_s": round(job_s, 1),
        "peak_rss_mb": round(peak_mb),
        "greedy_before": metrics["validation"]["before"]["wer"],
        "greedy_after": metrics["validation"]["after"]["wer"],
        "beam5_before": round(beam_wer(resolve_whisper(model).path), 4),
        "beam5_after": round(beam_wer(adapted), 4),
        "loss_first_last": [metrics["training"]["loss"][0], metrics["training"]["loss"][-1]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["embedded:tiny.en"],
                        help="model specs (embedded:tiny.en, embedded:base, or a CTranslate2 directory)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--single", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(single(args.single[0], args.single[1], Path(tmp))))
        return
    rows = []
    for model in args.models:
        for variant in args.variants:
            out = subprocess.run([sys.executable, __file__, "--single", model, variant], check=True,
                                 capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\nLoRA adapter on LJ001-0001..0008, WER on LJ001-0009..0016 ({len(TEST)} clips)\n")
    header = ("model", "adapter", "steps", "train s", "job s", "peak RSS MB", "greedy WER before→after",
              "beam-5 WER before→after")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['steps']} | {r['train_s']} | {r['job_s']} | {r['peak_rss_mb']} | "
              f"{r['greedy_before']:.2%} → {r['greedy_after']:.2%} | {r['beam5_before']:.2%} → {r['beam5_after']:.2%} |")


if __name__ == "__main__":
    main()
