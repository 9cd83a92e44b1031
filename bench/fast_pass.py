"""Fast pass: batch size x beam x VAD for the transcribe_fast decoder, against bare faster-whisper.

Usage::

    .venv/bin/python bench/fast_pass.py [--threads 2] [--rows all|default] [--batches 0,4,8,16] [--beams 1,5] [--no-bare]

One table from one run. Every row decodes, in this one process with tiny.en int8 loaded once, the
dev category-a set (corpus WER), the dev clips joined into one 3-minute recording (WER),
columbia.16k.wav (RTF) and bench/end_to_end.py's 5-minute recording (seconds); decode time only.

Rows, inputs and methodology: bench/README.md, section "fast_pass.py".
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from common import OUT, build_recording, normalized, workflow_config

from trax.quality.benchdata import benchdata_dir, wer_items
from trax.quality.evaluation import corpus_wer


def grid(rows: str, batches: list[int], beams: list[int]) -> list[tuple[int, int, bool]]:
    """(batch size, beam size, VAD) per trax row; batch 0 (sequential) with VAD off and on."""
    if rows == "default":
        return [(0, 5, False), (4, 5, True)]
    combos = [(0, beam, vad) for beam in beams for vad in (False, True)] if 0 in batches else []
    return combos + [(batch, beam, True) for batch in batches if batch for beam in beams]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", choices=["all", "default"], default="all")
    parser.add_argument("--batches", default="0,4,8,16", help="batch sizes of the grid (0 = sequential)")
    parser.add_argument("--beams", default="1,5", help="beam sizes of the grid")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare faster-whisper rows")
    args = parser.parse_args()

    from trax.asr.transcribe import TranscribeOptions, load_wav, load_whisper, resolve_whisper, transcribe_audio
    from trax.process import pin_blas_threads
    import numpy as np

    pin_blas_threads()
    base = TranscribeOptions(cpu_threads=args.threads)
    model = load_whisper(resolve_whisper(base.model), base)

    items = wer_items()
    five_minutes = build_recording(OUT / "five_minutes.wav")
    columbia = benchdata_dir() / "const-me-whisper" / "columbia.16k.wav"
    wavs = normalized([i.path for i in items] + [columbia, five_minutes], OUT / "fast_pass")
    dev_audio = [load_wav(wavs[i.path]) for i in items]
    columbia_audio, five_audio = load_wav(wavs[columbia]), load_wav(wavs[five_minutes])
    references = [i.reference for i in items]
    pause = np.zeros(8000, dtype=np.float32)
    joined_audio = np.concatenate([part for audio in dev_audio for part in (audio, pause)])

    def trax_decode(options: TranscribeOptions, audio) -> tuple[str, float]:
        start = time.perf_counter()
        segments, _, _, _ = transcribe_audio(model, audio, options)
        return " ".join(s.text for s in segments if s.text), time.perf_counter() - start

    def bare_decode(batched: bool, path: Path | None, audio) -> tuple[str, float]:
        from faster_whisper import BatchedInferencePipeline

        start = time.perf_counter()
        segments, _ = (BatchedInferencePipeline(model) if batched else model).transcribe(str(path) if path else audio)
        text = " ".join(s.text.strip() for s in segments)
        return text, time.perf_counter() - start

    print(f"tiny.en int8, {args.threads} CTranslate2 threads; dev set {len(items)} files, "
          f"{sum(len(a) for a in dev_audio) / 16000:.1f} s; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'row':32s} {'dev WER %':>9s} {'errors':>6s} {'dev s':>7s} {'joined WER %':>12s} {'columbia RTF':>12s} "
          f"{'5-min s':>8s}")
    default = TranscribeOptions.from_config(workflow_config()["transcribe_fast"])
    rows = [("workflow default", lambda audio, path: trax_decode(replace(default, cpu_threads=args.threads), audio))]
    rows += [(f"batch {b}, beam {k}, VAD {'on' if v else 'off'}",
              lambda audio, path, b=b, k=k, v=v: trax_decode(
                  replace(base, batch_size=b, beam_size=k, vad_filter=v, sequential_max_s=0), audio))
            for b, k, v in grid(args.rows, [int(b) for b in args.batches.split(",")],
                                [int(k) for k in args.beams.split(",")])]
    rows += [] if args.no_bare else [("bare WhisperModel defaults", lambda audio, path: bare_decode(False, path, audio)),
             ("bare Batched defaults", lambda audio, path: bare_decode(True, path, audio))]
    for name, decode in rows:
        dev = [decode(audio, wavs[item.path]) for audio, item in zip(dev_audio, items)]
        result = corpus_wer(references, [text for text, _ in dev])
        joined = corpus_wer([" ".join(references)], [decode(joined_audio, None)[0]])
        _, columbia_s = decode(columbia_audio, wavs[columbia])
        _, five_s = decode(five_audio, wavs[five_minutes])
        print(f"{name:32s} {100 * result.wer:9.2f} {result.substitutions + result.deletions + result.insertions:6d} {sum(s for _, s in dev):7.2f} "
              f"{100 * joined.wer:12.2f} {columbia_s / (len(columbia_audio) / 16000):12.3f} {five_s:8.2f}", flush=True)


if __name__ == "__main__":
    main()
