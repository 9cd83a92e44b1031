"""Refinement: accuracy, time and re-decoded share of fast-only, base-only and multi-pass variants.

Usage::

    .venv/bin/python bench/refine.py [--thresholds 0.3 0.4 0.5 0.6] [--out bench/out/refine.tsv]

In one process, with one load per model (tiny.en for the fast pass, the refine model for the
rest), on the dev category-a recordings (WER) plus ``columbia.16k.wav`` (time and share only).
Rows: fast only, refine model only, multi-pass at each ``word_threshold`` (without and with
domain biasing, and with ``min_gain``). Columns: corpus WER, wall seconds, share of audio
re-decoded, spans accepted / re-decoded.

Rows, settings and columns in detail: bench/README.md, section "refine.py".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

from trax.asr.domains import load_domains
from trax.asr.models import resolve_whisper
from trax.asr.refine import RefineOptions, load_refine_model, refine_transcript
from trax.asr.transcribe import TranscribeOptions, load_whisper, transcribe_wav
from trax.io.media import find_ffmpeg
from trax.quality.benchdata import benchdata_dir, wer_items
from trax.quality.evaluation import corpus_wer

COLUMBIA = "const-me-whisper/columbia.16k.wav"


def to_wav(source: Path, folder: Path) -> str:
    """16 kHz mono PCM copy (what normalize writes)."""
    target = folder / (source.stem + ".wav")
    subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-y", "-i", str(source), "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", str(target)], check=True)
    return str(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--domain-thresholds", type=float, nargs="+", default=[0.5, 0.6])
    parser.add_argument("--min-gains", type=float, nargs="+", default=[0.1, 0.2],
                        help="extra multi-pass rows with this min_gain at the first domain threshold")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as TSV here")
    args = parser.parse_args()

    items = wer_items()
    folder = Path(tempfile.mkdtemp(prefix="trax-bench-refine-"))
    wavs = [to_wav(item.path, folder) for item in items]
    columbia = to_wav(benchdata_dir() / COLUMBIA, folder)
    references = [item.reference for item in items]
    domains = load_domains(REPO / "config" / "domains")

    fast_options = TranscribeOptions()
    fast_source = resolve_whisper(fast_options.model)
    fast_model = load_whisper(fast_source, fast_options)
    start = time.perf_counter()
    refine_model = load_refine_model(RefineOptions())
    print(f"refine model load: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    def transcribe(wav: str, model, source, settings: dict) -> tuple[dict, float]:
        start = time.perf_counter()
        result = transcribe_wav(wav, Path(wav).stem, settings, model=model, source=source)
        return result, time.perf_counter() - start

    rows = []
    fast, fast_times = {}, {}
    for wav in [*wavs, columbia]:
        fast[wav], fast_times[wav] = transcribe(wav, fast_model, fast_source, {})
    rows.append(_row("fast only (tiny.en)", references, [fast[w] for w in wavs], fast_times, wavs, columbia, {}))

    base, base_times = {}, {}
    base_settings = RefineOptions().decode_settings()
    for wav in [*wavs, columbia]:
        base[wav], base_times[wav] = transcribe(wav, refine_model[0], refine_model[1], base_settings)
    rows.append(_row("refine model only (base)", references, [base[w] for w in wavs], base_times, wavs, columbia, {}))

    variants = [(f"multi-pass t={t:g}", {"enabled": True, "word_threshold": t, "domain": "general", "min_gain": 0.0})
                for t in args.thresholds]
    variants += [(f"multi-pass t={t:g} + domain", {"enabled": True, "word_threshold": t, "domain": "auto",
                                                   "min_gain": 0.0}) for t in args.domain_thresholds]
    variants += [(f"multi-pass t={args.domain_thresholds[0]:g} + domain, min_gain {g:g}",
                  {"enabled": True, "word_threshold": args.domain_thresholds[0], "domain": "auto", "min_gain": g})
                 for g in args.min_gains]
    for label, settings in variants:
        refined, times = {}, {}
        for wav in [*wavs, columbia]:
            start = time.perf_counter()
            refined[wav] = refine_transcript(fast[wav], wav, settings, domains, None, lambda adapter: refine_model)
            times[wav] = fast_times[wav] + time.perf_counter() - start
        rows.append(_row(label, references, [refined[w] for w in wavs], times, wavs, columbia, refined))
        chosen = sorted({refined[w]["domain"]["name"] for w in [*wavs, columbia]})
        print(f"{rows[-1]} domains chosen {chosen}", file=sys.stderr, flush=True)

    header = ["variant", "WER %", "S/D/I", "wall s (a-set)", "wall s (columbia)", "re-decoded %", "accepted/spans"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")


def _row(label, references, transcripts, times, wavs, columbia, refined) -> list:
    result = corpus_wer(references, [t["text"] for t in transcripts])
    total = sum(refined[w]["duration"] for w in refined) if refined else 0.0
    redecoded = sum(refined[w]["refinement"]["redecoded_s"] for w in refined) if refined else 0.0
    spans = [s for w in refined for s in refined[w]["refinement"]["spans"]] if refined else []
    return [
        label,
        f"{100 * result.wer:.2f}",
        f"{result.substitutions}/{result.deletions}/{result.insertions}",
        f"{sum(times[w] for w in wavs):.1f}",
        f"{times[columbia]:.1f}",
        f"{100 * redecoded / total:.1f}" if refined else "-",
        f"{sum(s['accepted'] for s in spans)}/{len(spans)}" if refined else "-",
    ]


if __name__ == "__main__":
    main()
