"""The review page's audio copy: encode time, size and fidelity per libopus complexity level.

Usage::

    .venv/bin/python bench/opus_level.py [--audio "resources/example/welcome meeting.flac"] [--repeats 5]

The recording is normalized to 16 kHz mono (as rule normalize does), then encoded as rule
review_audio does (trax.transcript.review.encode_audio) at each `review.audio_compression_level`
(libopus complexity). Columns: median wall seconds of the encode (PyAV's libopus, in-process), the
WebM's size, and fidelity as the mean absolute difference between the log-mel spectrograms (Whisper's
80-bin features) of the original and of the Opus copy decoded back: lower is closer.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO

from trax.io.media import decode_to_wav, find_ffmpeg, load_wav
from trax.transcript.review import encode_audio


def log_mel(samples: np.ndarray) -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor()(samples)


def decoded(webm: Path) -> np.ndarray:
    raw = subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-i", str(webm), "-ar", "16000", "-ac", "1",
                          "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", default=str(REPO / "resources" / "example" / "welcome meeting.flac"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--levels", default="10,8,5,3,0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trax-opus-") as tmp:
        wav = Path(tmp) / "audio.wav"
        decode_to_wav(args.audio, wav)
        original = load_wav(wav)
        reference = log_mel(original)
        print("| complexity | encode s (median) | size kB | log-mel difference |\n|---|---|---|---|")
        for level in (int(v) for v in args.levels.split(",")):
            webm = Path(tmp) / f"level{level}.webm"
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                encode_audio(str(wav), str(webm), {"audio_compression_level": level})
                times.append(time.perf_counter() - start)
            copy = log_mel(decoded(webm)[: len(original)])
            frames = min(reference.shape[1], copy.shape[1])
            difference = float(np.abs(reference[:, :frames] - copy[:, :frames]).mean())
            print(f"| {level} | {statistics.median(times):.3f} | {webm.stat().st_size / 1000:.1f} | {difference:.4f} |")


if __name__ == "__main__":
    main()
