"""What one shared VAD pass could save: Silero VAD's cost in transcribe_fast and in diarize.

Usage::

    .venv/bin/python bench/vad_share.py [--repeats 3]

Both stages run faster-whisper's Silero VAD on the same normalized audio with their own settings;
one pass could serve both without changing either's output. Rows, medians of ``--repeats``: the
network alone, and regions drawn with each stage's settings, on bench/end_to_end.py's 5-minute
recording and the 26 dev clips.

Why, and the rows in detail: bench/README.md, section "vad_share.py".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import OUT, build_recording, normalized

from trax.quality.benchdata import wer_items


def median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

    from trax.diarization.embedded import EmbeddedOptions, speech_regions
    from trax.asr.transcribe import TranscribeOptions, load_wav

    five = build_recording(OUT / "five_minutes.wav")
    items = wer_items()
    wavs = normalized([i.path for i in items], OUT / "fast_pass")
    inputs = {"5-minute recording": [load_wav(five)], f"{len(items)} dev clips": [load_wav(wavs[i.path]) for i in items]}
    transcriber = VadOptions(**TranscribeOptions().vad_parameters())
    diarizer = EmbeddedOptions()
    model = get_vad_model()
    get_speech_timestamps(inputs["5-minute recording"][0][:16000], transcriber)  # session warm

    print(f"Silero VAD v6 (faster-whisper, ONNX, 1 thread); load average {os.getloadavg()[0]:.1f} at start; "
          f"medians of {args.repeats}")
    print(f"| input | audio s | probabilities s | transcriber regions s | diarizer regions s | "
          f"share of audio time % |")
    print("|---|---|---|---|---|---|")
    for name, audios in inputs.items():
        seconds = sum(len(a) for a in audios) / 16000

        def probabilities() -> None:
            for audio in audios:
                model(np.pad(audio, (0, 512 - len(audio) % 512)))  # as get_speech_timestamps pads

        def transcriber_regions() -> None:
            for audio in audios:
                get_speech_timestamps(audio, transcriber)

        def diarizer_regions() -> None:
            for audio in audios:
                speech_regions(audio, diarizer)

        p, t, d = (median_seconds(f, args.repeats) for f in (probabilities, transcriber_regions, diarizer_regions))
        print(f"| {name} | {seconds:.1f} | {p:.3f} | {t:.3f} | {d:.3f} | {100 * t / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
