"""Encoder context: would a short clip decode faster, and as well, if Whisper's encoder saw only the clip?

Usage::

    .venv/bin/python bench/encoder_context.py [--margins 0,1,2,5]

Whisper's encoder always takes a 30-s window, so a 3-s clip costs a full 30-s encoder pass.
Measures both sides: one tiny.en ``encode`` call on fewer frames (median of 3), and the dev WER
with every window cut to the call's longest chunk plus each margin, against the 30-s windows as
shipped. The cut is a patch of faster-whisper and Trax for this process only.

Columns and how the cut is made: bench/README.md, section "encoder_context.py".
"""

from __future__ import annotations

import argparse
import math
import statistics
import threading
import time

import numpy as np
from common import OUT, normalized

from trax.quality.benchdata import wer_items
from trax.quality.evaluation import corpus_wer


#: Whisper's window: 30 s of 10-ms log-mel frames.
FULL_FRAMES = 3000


class ShortWindows:
    """Cuts the batched decoder's windows to the longest chunk of each call plus a margin."""

    def __init__(self) -> None:
        import faster_whisper.transcribe as fw_transcribe
        from faster_whisper.audio import pad_or_trim

        import trax.asr.transcribe as trax_transcribe

        self.margin_s: float | None = None  # None: full 30-s windows (as shipped)
        self.frames = threading.local()
        collect_chunks, padding = fw_transcribe.collect_chunks, trax_transcribe._PaddingExtractor
        bench = self

        def collect(audio, clips, *args, **kwargs):
            chunks, metadata = collect_chunks(audio, clips, *args, **kwargs)
            bench.frames.value = bench.window_frames(max((len(c) for c in chunks), default=0))
            return chunks, metadata

        class Padding(padding):
            def __call__(self, audio, *args, **kwargs):
                missing = bench.current() * 160 - len(audio)
                if missing > 0:
                    audio = np.concatenate([audio, np.zeros(missing, dtype=audio.dtype)])
                return self._extractor(audio, *args, **kwargs)

        fw_transcribe.collect_chunks = collect
        fw_transcribe.pad_or_trim = lambda features, length=FULL_FRAMES, **kw: pad_or_trim(features, self.current())
        trax_transcribe._PaddingExtractor = Padding

    def window_frames(self, longest_samples: int) -> int:
        if self.margin_s is None:
            return FULL_FRAMES
        return min(FULL_FRAMES, 100 * math.ceil(longest_samples / 16000 + self.margin_s))

    def current(self) -> int:
        return getattr(self.frames, "value", FULL_FRAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--margins", default="0,1,2,5", help="seconds added to the longest chunk of a call")
    args = parser.parse_args()

    import ctranslate2

    from trax.asr.transcribe import TranscribeOptions, load_wav, load_whisper, resolve_whisper, transcribe_audio

    from trax.process import pin_blas_threads

    windows = ShortWindows()
    pin_blas_threads()
    options = TranscribeOptions()
    model = load_whisper(resolve_whisper(options.model), options)

    print(f"tiny.en {options.compute_type}, {options.cpu_threads} CTranslate2 threads")
    print()
    print("| encoder input frames (seconds) | encoder s (median of 3) |")
    print("|---|---|")
    for frames in (FULL_FRAMES, 1000, 500):
        features = ctranslate2.StorageView.from_array(np.full((1, 80, frames), -1.5, dtype=np.float32))
        model.model.encode(features)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.model.encode(features)
            times.append(time.perf_counter() - start)
        print(f"| {frames} ({frames // 100} s) | {statistics.median(times):.3f} |")
    print()

    items = wer_items()
    wavs = normalized([i.path for i in items], OUT / "fast_pass")
    audio = [load_wav(wavs[i.path]) for i in items]
    references = [i.reference for i in items]
    print(f"| window | dev WER % | errors | clips whose text changed | dev decode s |")
    print("|---|---|---|---|---|")
    shipped: list[str] = []
    for margin in [None] + [float(m) for m in args.margins.split(",")]:
        windows.margin_s = margin
        start = time.perf_counter()
        texts = [" ".join(s.text for s in transcribe_audio(model, a, options)[0] if s.text) for a in audio]
        wall = time.perf_counter() - start
        result = corpus_wer(references, texts)
        shipped = shipped or texts
        changed = sum(a != b for a, b in zip(texts, shipped))
        label = "30 s (as shipped)" if margin is None else f"longest chunk + {margin:g} s"
        errors = result.substitutions + result.deletions + result.insertions
        print(f"| {label} | {100 * result.wer:.2f} | {errors} | {changed} | {wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
