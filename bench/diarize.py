"""Diarization accuracy and speed on the dev multi-speaker set (13 recordings, 390 s).

Usage::

    .venv/bin/python bench/diarize.py                         # default embedded settings + baseline
    .venv/bin/python bench/diarize.py --set hop_s=0.5 --set switch_penalty=0   # one variant
    .venv/bin/python bench/diarize.py --sweep switch_penalty=0,1,2,4            # one row per value

Scores the embedded diarizer (and a one-speaker VAD floor) on pyannote's sample.wav and debug
protocol recordings, decoded by the workflow's own normalize step. Columns: corpus DER at collar
0 and ±0.25 s with its miss / false alarm / confusion split, exact speaker counts, RTF. ``--loo``
chooses settings leave-one-recording-out; ``--concat N`` scores one long recording instead.

Items, columns, ``--loo`` and ``--concat`` in detail: bench/README.md, section "diarize.py".
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import tempfile
import time
from pathlib import Path

from common import Audio, Diarizer, annotation, der_scores, load_items, per_file_components, pooled_der, \
    simulated_meetings

from trax.diarization.embedded import (
    EMBED_BLOCK_WINDOWS,
    EmbeddedOptions,
    diarize_embedded,
    load_embedded_models,
    speech_regions,
)
from trax.io.annotation import Turn, rttm_turns
from trax.io.media import audio_pieces, load_wav
from trax.process import pin_blas_threads


def score(items, hypotheses: dict[str, list[Turn]]) -> dict[str, float]:
    """Corpus DER at collar 0 and 0.5 (±0.25 s), components, speaker-count accuracy."""
    return der_scores([(item.uri, rttm_turns(item.rttm, uri=item.uri), hypotheses[item.uri], list(item.uem))
                       for item, _ in items])


#: The embedded defaults before issue 31 (a row of every table, so the change stays visible);
#: also main's default before resegmentation (issue 31 changed the encoder, not these settings).
BEFORE_31 = EmbeddedOptions(vad_threshold=0.3, vad_min_silence_ms=300, vad_pad_ms=300, window_s=1.0, hop_s=0.5,
                            cluster_threshold=0.35, min_speaker_s=4.0, distinct_speaker_s=1.5,
                            distinct_speaker_distance=0.41, switch_penalty=10.0, overlap_margin=0.0,
                            speech_dbfs=-20.0, resegment_iterations=0, resegment_min_s=0.0)
#: The simulated meetings scored by default (bench/meetings.py chooses settings on seed 1).
MEETINGS_SEED = 2
MEETINGS_COUNT = 12


def meetings_row(models, meetings, options: EmbeddedOptions) -> dict[str, float]:
    """Scores on simulated meetings (whole meeting scored, no collar beyond the columns')."""
    return der_scores([(m.uri, m.reference, diarize_embedded(models, m.audio, options)[0],
                        [(0.0, len(m.audio) / 16000)]) for m in meetings])


def run_variant(models, items, options: EmbeddedOptions, repeats: int, one_speaker: bool = False):
    hypotheses: dict[str, list[Turn]] = {}
    rtfs = []
    for _ in range(repeats):
        elapsed = duration = 0.0
        for item, audio in items:
            start = time.perf_counter()
            if one_speaker:
                turns = [Turn(s / 16000, e / 16000, "S") for s, e in speech_regions(audio, options)]
            else:
                turns, _ = diarize_embedded(models, audio, options)
            elapsed += time.perf_counter() - start
            duration += len(audio) / 16000
            hypotheses[item.uri] = turns
        rtfs.append(elapsed / duration)
    return {**score(items, hypotheses), "rtf": statistics.median(rtfs)}


def loo_bench(models, items, grids: dict[str, list]) -> None:
    """Leave-one-recording-out: for each recording, the variant of a grid with the lowest pooled
    collar-0 DER on the other recordings is chosen and scored on it (see bench/README.md)."""
    uris = [item.uri for item, _ in items]
    diarize = Diarizer(models)  # each recording embedded once per embedding setting
    cache: dict = {}
    print("| search space | variants | LOO DER c0 | LOO DER c.25 | LOO spk ok | in-sample best DER c0 | chosen (per held-out file) |")
    print("|---|---|---|---|---|---|---|")
    for name, variants in grids.items():
        scores = {}
        for label, options in variants:
            if options not in cache:
                hypotheses = {item.uri: diarize(item.uri, audio, options) for item, audio in items}
                cache[options] = per_file_components(items, hypotheses)
            scores[label] = cache[options]
        held = []
        chosen = []
        for uri in uris:
            best = min(scores, key=lambda label: pooled_der([scores[label][u] for u in uris if u != uri], 0.0))
            held.append(scores[best][uri])
            chosen.append(best)
        in_sample = min(pooled_der(list(files.values()), 0.0) for files in scores.values())
        counts = {label: chosen.count(label) for label in dict.fromkeys(chosen)}
        print(f"| {name} | {len(variants)} | {pooled_der(held, 0.0):.1f} | {pooled_der(held, 0.5):.1f} | "
              f"{sum(f['count_ok'] for f in held)}/{len(held)} | {in_sample:.1f} | "
              f"{'; '.join(f'{k} x{v}' for k, v in counts.items())} |")


def parse_value(text: str):
    if text.lower() in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def concat_bench(models, items, base: EmbeddedOptions, repeats: int, workdir: Path) -> None:
    """Score one long recording made of the dev items (see bench/README.md)."""
    import wave

    import numpy as np
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    parts, reference, uem = [], [], []
    offset = 0.0
    for _ in range(repeats):
        for item, audio in items:
            parts.append(audio)
            for turn in rttm_turns(item.rttm, uri=item.uri):
                reference.append(Turn(turn.start + offset, turn.end + offset, f"{item.uri}:{turn.speaker}"))
            uem += [(s + offset, e + offset) for s, e in item.uem]
            offset += len(audio) / 16000
    audio = np.concatenate(parts)
    wav = workdir / "concat.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.round(audio * 32768).clip(-32768, 32767).astype("<i2").tobytes())
    audio = load_wav(wav)
    print(f"concatenated: {len(audio) / 16000:.1f} s ({repeats} x the dev set), {len(reference)} reference turns")
    variants = [
        ("whole array, exact clustering (before)", audio, dataclasses.replace(base, cluster_chunk_windows=10**9)),
        ("pieces + exact clustering", None, dataclasses.replace(base, cluster_chunk_windows=10**9)),
        (f"pieces + chunked clustering (default, {base.cluster_chunk_windows})", None, base),
        ("pieces + chunked, cluster_chunk_windows=1000", None, dataclasses.replace(base, cluster_chunk_windows=1000)),
        ("pieces + chunked, cluster_chunk_windows=500", None, dataclasses.replace(base, cluster_chunk_windows=500)),
    ]
    print("| variant | DER c0 | DER c.25 | miss | fa | conf | speakers (ref) | RTF | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, array, options in variants:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        source = array if array is not None else audio_pieces(wav)
        turns, details = diarize_embedded(models, source, options)
        elapsed = time.perf_counter() - start
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        ref = annotation(reference, "concat")
        hyp = annotation(turns, "concat")
        timeline = Timeline([Segment(s, e) for s, e in uem], uri="concat")
        c0 = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        c5 = DiarizationErrorRate(collar=0.5, skip_overlap=False)
        d0, d5 = c0(ref, hyp, uem=timeline), c5(ref, hyp, uem=timeline)
        comp = c0.accumulated_
        print(f"| {name} | {100 * d0:.1f} | {100 * d5:.1f} | {100 * comp['missed detection'] / comp['total']:.1f} | "
              f"{100 * comp['false alarm'] / comp['total']:.1f} | {100 * comp['confusion'] / comp['total']:.1f} | "
              f"{len(hyp.labels())} ({len(ref.labels())}) | {elapsed / (len(audio) / 16000):.3f} | {grown:.0f} |")
        print(f"  details: {details}")


#: Cold loads compared by ``--encoder`` (each in a fresh Python process): today's loader, and the
#: torch + librosa + resemblyzer imports it replaced (what the loader paid before issue 31).
COLD_LOADS = {
    "embedded models (onnxruntime + numpy)": "from trax.diarization.embedded import load_embedded_models; "
                                             "load_embedded_models()",
    "before: resemblyzer (torch) + librosa": "import librosa, resemblyzer, torch; torch.set_num_threads(1); "
                                             "resemblyzer.VoiceEncoder('cpu', verbose=False); "
                                             "librosa.feature.melspectrogram(y=__import__('numpy').zeros(16000, "
                                             "dtype='float32'), sr=16000, n_fft=400, hop_length=160, n_mels=40)",
}


def encoder_bench(items, models, repeats: int) -> None:
    """The torch-free encoder against resemblyzer's own on the dev audio (see bench/README.md)."""
    import subprocess
    import sys

    import numpy as np
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    from trax.diarization.encoder import mel_spectrogram

    torch.set_num_threads(1)
    print("| cold load in a fresh process | median s |\n|---|---|")
    for name, code in COLD_LOADS.items():
        times = []
        for _ in range(repeats):
            timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
            out = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, check=True).stdout
            times.append(float(out.split()[-1]))
        print(f"| {name} | {statistics.median(times):.2f} |")
    theirs = VoiceEncoder("cpu", verbose=False)
    audio = [a for _, a in items]
    minutes = sum(len(a) for a in audio) / 16000 / 60

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    ours_mel = [mel_spectrogram(a) for a in audio]
    ref_mel = [wav_to_mel_spectrogram(a) for a in audio]
    windows = np.stack([m[s : s + 100] for m in ref_mel for s in range(0, len(m) - 100, 50)])
    ours_windows = np.stack([m[s : s + 100] for m in ours_mel for s in range(0, len(m) - 100, 50)])
    blocks = range(0, len(windows), EMBED_BLOCK_WINDOWS)
    with torch.inference_mode():
        expected = np.concatenate([theirs(torch.from_numpy(windows[i : i + EMBED_BLOCK_WINDOWS])).numpy() for i in blocks])
    got = np.concatenate([models.encoder(ours_windows[i : i + EMBED_BLOCK_WINDOWS]) for i in blocks])
    cosine = (got * expected).sum(axis=1)
    mel_error = max(float(np.abs(a - b).max() / max(b.max(), 1e-9)) for a, b in zip(ours_mel, ref_mel))
    print(f"\n{len(windows)} windows of 1 s from {minutes:.1f} min of dev audio; cosine to resemblyzer's "
          f"embeddings min {cosine.min():.6f}, mean {cosine.mean():.6f}; mel max relative error {mel_error:.1e}")
    print("| step | before (torch / librosa) | now (onnxruntime / numpy) |\n|---|---|---|")
    print(f"| mel features, s per audio minute | {best(lambda: [wav_to_mel_spectrogram(a) for a in audio]) / minutes:.3f} "
          f"| {best(lambda: [mel_spectrogram(a) for a in audio]) / minutes:.3f} |")
    with torch.inference_mode():
        torch_s = best(lambda: [theirs(torch.from_numpy(windows[i : i + EMBED_BLOCK_WINDOWS])) for i in blocks])
    onnx_s = best(lambda: [models.encoder(ours_windows[i : i + EMBED_BLOCK_WINDOWS]) for i in blocks])
    print(f"| encoder, ms per window (one thread) | {1000 * torch_s / len(windows):.2f} | {1000 * onnx_s / len(windows):.2f} |")


def loo_grids(base: EmbeddedOptions) -> dict[str, list]:
    """Search spaces for ``--loo``: before issue 14 (no levelling: the cluster threshold alone),
    after levelling (speech levelled to -30/-25/-20 dBFS before embedding, with the same
    thresholds), both with every small cluster merged (``distinct_speaker_distance`` None), and
    then with small distinct clusters kept (``distinct_speaker_distance``; None first, so a tie
    keeps the old behaviour); issue 31's small-speaker and count rules; then resegmentation
    (iterations x the speech below which a speaker is dropped) and the second-pass splits and
    merges of clusters, with and without resegmentation."""
    thresholds = (0.25, 0.3, 0.35, 0.4)
    # The earlier search spaces as they were chosen: without resegmentation (added later).
    off = dataclasses.replace(base, resegment_iterations=0, resegment_min_s=0.0, split_distance=None,
                              merge_distance=None)
    merged = dataclasses.replace(off, distinct_speaker_distance=None)

    def grid(levels) -> list:
        return [(f"dbfs={level} cut={t}", dataclasses.replace(merged, speech_dbfs=level, cluster_threshold=t))
                for level in levels for t in thresholds]

    distinct = [(f"dbfs=-20.0 cut={t} distinct={d}",
                 dataclasses.replace(off, speech_dbfs=-20.0, cluster_threshold=t, distinct_speaker_distance=d))
                for d in (None, 0.38, 0.41, 0.44) for t in thresholds]
    small = [(f"cut={t} min_s={m} distinct_s={d}",
              dataclasses.replace(off, cluster_threshold=t, min_speaker_s=m, distinct_speaker_s=d))
             for t in (0.3, 0.35) for m in (4.0, 3.0, 2.0) for d in (1.5, 1.0)]
    rules = [(f"{rule} cut={t}", dataclasses.replace(off, count_rule=rule, cluster_threshold=t))
             for rule in ("threshold", "silhouette") for t in (0.35, 0.3, 0.4)]
    resegment = [(f"resegment={n} drop<{m}s", dataclasses.replace(off, resegment_iterations=n, resegment_min_s=m))
                 for n in (0, 1, 2, 3) for m in (0.0, 1.0, 2.0, 3.0, 4.0) if n or not m]
    passes = [(f"split={d} merge={g} {label}", dataclasses.replace(options, split_distance=d, split_min_s=1.0,
                                                                   merge_distance=g))
              for label, options in (("no resegment", off), ("resegment=1 drop<4.0s", dataclasses.replace(
                  off, resegment_iterations=1, resegment_min_s=4.0)))
              for d in (None, 0.2, 0.25) for g in (None, 0.15, 0.2)]
    return {"before: cluster_threshold": grid([None]),
            "issue 14: + speech_dbfs": grid([None, -30.0, -25.0, -20.0]),
            "+ distinct_speaker_distance": distinct,
            "issue 31: small-speaker rules": small,
            "issue 31: count rule": rules,
            "issue 31: resegmentation": resegment,
            "issue 31: second-pass splits and merges": passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an EmbeddedOptions field for all rows")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="one row per value (several --sweep flags: their product)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meetings", type=int, default=MEETINGS_COUNT, metavar="N",
                        help="also score N simulated meetings (0: none)")
    parser.add_argument("--loo", action="store_true",
                        help="leave-one-recording-out: settings chosen on 12 recordings, scored on the 13th")
    parser.add_argument("--grid", action="append", default=[], metavar="TEXT",
                        help="--loo: only the search spaces whose name contains TEXT (repeatable)")
    parser.add_argument("--encoder", action="store_true",
                        help="compare the torch-free encoder with resemblyzer's: load time, speed, agreement")
    parser.add_argument("--concat", type=int, default=0, metavar="N",
                        help="score one recording of the dev set N times over instead (see bench/README.md)")
    args = parser.parse_args()

    pin_blas_threads()
    base = dataclasses.replace(EmbeddedOptions(), **{k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)})
    variants = [({}, base)]
    for sweep in args.sweep:
        key, values = sweep.split("=", 1)
        variants = [({**label, key: parse_value(v)}, dataclasses.replace(opts, **{key: parse_value(v)}))
                    for label, opts in variants for v in values.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        items = load_items(Path(tmp))
        start = time.perf_counter()
        models = load_embedded_models()
        load_s = time.perf_counter() - start
        if args.concat:
            concat_bench(models, items, base, args.concat, Path(tmp))
            return
    if args.encoder:
        encoder_bench(items, models, args.repeats)
        return
    if args.loo:
        grids = {name: variants for name, variants in loo_grids(base).items()
                 if not args.grid or any(part in name for part in args.grid)}
        loo_bench(models, items, grids)
        return
    total = sum(len(audio) for _, audio in items) / 16000
    print(f"dev set: {len(items)} recordings, {total:.1f} s; models loaded in {load_s:.1f} s")
    print(f"base settings: {base}")
    rows = [("one speaker (VAD)", run_variant(models, items, base, 1, one_speaker=True)),
            ("before issue 31 / before resegmentation", run_variant(models, items, BEFORE_31, args.repeats))]
    for label, options in variants:
        name = "embedded " + (" ".join(f"{k}={v}" for k, v in label.items()) or "(defaults)")
        rows.append((name, run_variant(models, items, options, args.repeats)))
    header = f"| {'variant':<44} | DER c0 | DER c.25 | miss | fa | conf | spk ok | spk err | RTF |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, r in rows:
        print(f"| {name:<44} | {r['der0']:6.1f} | {r['der25']:8.1f} | {r['miss']:4.1f} | {r['fa']:4.1f} | "
              f"{r['conf']:4.1f} | {r['count_ok']:3d}/{len(items)} | {r['count_err']:+7.2f} | {r['rtf']:.3f} |")
    if args.meetings:
        with tempfile.TemporaryDirectory() as tmp:
            meetings = simulated_meetings(MEETINGS_SEED, args.meetings, Audio(Path(tmp)))
        print(f"\nsimulated meetings (bench/meetings.py, seed {MEETINGS_SEED}, {len(meetings)} meetings, "
              f"{sum(len(m.audio) for m in meetings) / 16000:.0f} s; never used to choose settings):")
        print(header.replace(" RTF |", ""))
        print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-2]) + "|")
        for name, options in [("before issue 31 / before resegmentation", BEFORE_31)] + [
                ("embedded " + (" ".join(f"{k}={v}" for k, v in label.items()) or "(defaults)"), opts)
                for label, opts in variants]:
            r = meetings_row(models, meetings, options)
            print(f"| {name:<44} | {r['der0']:6.1f} | {r['der25']:8.1f} | {r['miss']:4.1f} | {r['fa']:4.1f} | "
                  f"{r['conf']:4.1f} | {r['count_ok']:3d}/{r['items']} | {r['count_err']:+7.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB (whole bench process, pyannote.metrics included)")


if __name__ == "__main__":
    main()
