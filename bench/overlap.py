"""The overlap detector (issue 31, item 4): trained on simulated mixtures, scored on dev.

Usage::

    .venv/bin/python bench/overlap.py            # train, choose the threshold, score: two tables
    .venv/bin/python bench/overlap.py --write    # ... and write the shipped weights
    .venv/bin/python bench/overlap.py --cost     # only time embedding and labelling, detector off / on

Trains :mod:`trax.diarization.overlap`'s two stages on simulated conversations
(``common.simulated_meetings``) built only from voices in none of the scored sets: the 11
benchdata-ml speakers and the columbia speaker (the dev DER recordings are AMI people, who never
feed the meetings; the English single-speaker dev clips, ``wer_items``, are held out so their
false alarm is honest). Stage one (acoustic) on draws ``TRAIN_SEEDS``, stage two on draws
``STAGE_TWO_SEEDS`` (half of each in a synthetic room, half the turns overlapping); deterministic
by seed. The threshold is chosen on draw ``VALID_SEED`` of all the meeting voices, never on dev or
on ``bench/diarize_choose.py``'s draws 1 / 2; every row is the library's own labelling
(``label_frames`` with ``overlap_detector`` on).

Tables: the detector's frame precision / recall per threshold (validation draw, dev, scoring
draw) and the share of held-out single-speaker frames it flags; then per threshold the dev DER at
collar 0 / ±0.25 s with miss / false alarm / confusion, trn03's false alarm (the dev recording of
one speaker), the overlapped speech output on the single-speaker clips (% of their speech), and
the validation and scoring draws (draw 2, never used to choose). Detail: bench/README.md, "overlap.py".
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np
from common import OUT, Audio, Diarizer, der_scores, load_items, meeting_voices, per_file_components, pooled_der, \
    simulated_meetings

from trax.diarization.embedded import (
    FRAME,
    SAMPLE_RATE,
    SPEAKER_EMBEDDINGS,
    EmbeddedOptions,
    label_frames,
    load_embedded_models,
    speech_mel,
    top_two_scores,
)
from trax.diarization.overlap import ARRAYS, WEIGHTS, OverlapDetector, overlap_features, overlap_frames, \
    stage_two_inputs
from trax.io.annotation import Turn, overlap_time, rttm_turns
from trax.io.media import NormalizeOptions, load_wav, normalize
from trax.process import pin_blas_threads
from trax.quality.benchdata import wer_items

#: Draws the acoustic stage is trained on (seeds far from the other benches' draws 1-4).
TRAIN_SEEDS = (101, 102, 103, 104)
#: Draws the second stage is trained on (the acoustic stage has not seen them).
STAGE_TWO_SEEDS = (105, 106)
#: The draw the threshold is chosen on (all the meeting voices).
VALID_SEED = 111
#: Meetings per draw.
DRAW_COUNT = 12
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def training_voices() -> dict:
    """Voices in no scored set: the benchdata-ml speakers and the columbia speaker."""
    return {person: clips for person, clips in meeting_voices().items()
            if person == "columbia" or "_" in person}


def frame_counts(frame_times: np.ndarray, reference: list) -> np.ndarray:
    """How many reference speakers talk at each frame's centre."""
    centres = (frame_times + FRAME / 2) / SAMPLE_RATE
    counts = np.zeros(len(centres), dtype=np.int32)
    for turn in reference:
        start, end = (turn.start, turn.end) if hasattr(turn, "start") else turn[:2]
        counts[(centres >= start) & (centres < end)] += 1
    return counts


def frame_path(frame_times: np.ndarray, turns: list[Turn]) -> np.ndarray:
    """Each frame's speaker (index into the sorted labels; -1: none) from the diarizer's turns."""
    names = sorted({t.speaker for t in turns})
    path = np.full(len(frame_times), -1)
    seconds = frame_times / SAMPLE_RATE
    for turn in turns:
        path[(seconds >= turn.start - 1e-6) & (seconds < turn.end - 1e-6)] = names.index(turn.speaker)
    return path


@dataclasses.dataclass
class Prepared:
    """A recording embedded and labelled once (detector off), with what the detector reads."""

    uri: str
    speech: object
    mel: np.ndarray
    path: np.ndarray
    top_two: np.ndarray | None
    acoustic: np.ndarray | None = None


def prepare(diarize: Diarizer, uri: str, audio: np.ndarray, options: EmbeddedOptions) -> Prepared | None:
    speech = diarize.embeddings(uri, audio, options)
    if speech is None:
        return None
    turns, details = label_frames(speech, options)
    times, mel = speech_mel(audio, options)[1:]
    assert np.array_equal(times, speech.frame_times), uri
    voices = details[SPEAKER_EMBEDDINGS]
    top_two = (top_two_scores(speech, speech.embeddings.astype(np.float64), np.stack(list(voices.values())))
               if len(voices) > 1 else None)
    return Prepared(uri, speech, mel, frame_path(times, turns), top_two)


def train_acoustic(prepared: list[Prepared], references: dict, hidden: int) -> dict[str, np.ndarray]:
    """Stage one on every other speech frame: standardised features, one hidden layer."""
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([overlap_features(r.mel)[::2] for r in prepared])
    y = np.concatenate([(frame_counts(r.speech.frame_times, references[r.uri]) >= 2)[::2] for r in prepared])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=60, early_stopping=True,
                          random_state=0, batch_size=256)
    model.fit((x - mean) / std, y)
    print(f"stage one: {len(y)} frames x {x.shape[1]} features ({100 * y.mean():.1f} % overlapped), "
          f"{model.n_iter_} epochs")
    return {"mean": mean, "std": std, "w1": model.coefs_[0], "b1": model.intercepts_[0],
            "w2": model.coefs_[1][:, 0], "b2": model.intercepts_[1]}


def train_stage_two(prepared: list[Prepared], references: dict) -> dict[str, np.ndarray]:
    """Stage two: a logistic regression on stage one's logit and the diarizer's frame facts."""
    from sklearn.linear_model import LogisticRegression

    usable = [r for r in prepared if r.top_two is not None]
    x = np.concatenate([stage_two_inputs(r.acoustic, r.top_two, r.path) for r in usable])
    y = np.concatenate([frame_counts(r.speech.frame_times, references[r.uri]) >= 2 for r in usable])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / std, y)
    print(f"stage two: {len(y)} frames ({100 * y.mean():.1f} % overlapped), weights {model.coef_[0].round(3)}")
    return {"mean2": mean, "std2": std, "w3": model.coef_[0], "b3": model.intercept_}


def hypothesis(r: Prepared, detector: OverlapDetector | None, threshold: float, options: EmbeddedOptions) -> list:
    """The library's own labelling with the detector on (``detector`` None: off)."""
    if r is None:
        return []
    if detector is None:
        return label_frames(r.speech, options)[0]
    speech = dataclasses.replace(r.speech, overlap=r.acoustic)
    on = dataclasses.replace(options, overlap_detector=True, overlap_threshold=threshold)
    return label_frames(speech, on, overlap_detector=detector)[0]


def detector_quality(prepared: list, references: dict, detector, threshold: float) -> tuple[float, float, int]:
    """Frame precision and recall of the flagged frames against the reference overlap, and the
    frames flagged (recordings the diarizer gives one speaker are never flagged)."""
    tp = fp = fn = 0
    for r in prepared:
        if r is None:
            continue
        truth = frame_counts(r.speech.frame_times, references[r.uri]) >= 2
        flags = (overlap_frames(detector(r.acoustic, r.top_two, r.path), threshold) if r.top_two is not None
                 else np.zeros(len(truth), dtype=bool))
        tp += int((flags & truth).sum())
        fp += int((flags & ~truth).sum())
        fn += int((~flags & truth).sum())
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp + fp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score-seed", type=int, default=2, help="the meeting draw scored (never used to choose)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units of the acoustic stage")
    parser.add_argument("--train-seeds", default=",".join(map(str, TRAIN_SEEDS)), help="acoustic stage's draws")
    parser.add_argument("--write", action="store_true", help=f"write the trained weights to {WEIGHTS.name}")
    parser.add_argument("--cost", action="store_true", help="only time embedding the dev set with the detector off / on")
    args = parser.parse_args()
    pin_blas_threads()
    if args.cost:
        cost()
        return
    options = EmbeddedOptions()
    voices = training_voices()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Audio(Path(tmp))
        items = load_items(Path(tmp))
        draws = {
            "train": [m for i, seed in enumerate(int(v) for v in args.train_seeds.split(",")) for m in
                      simulated_meetings(seed, DRAW_COUNT, audio, voices=voices, room=bool(i % 2), overlap_share=0.5)],
            "stage two": [m for i, seed in enumerate(STAGE_TWO_SEEDS) for m in
                          simulated_meetings(seed, DRAW_COUNT, audio, voices=voices, room=bool(i % 2),
                                             overlap_share=0.5)],
            "validation": simulated_meetings(VALID_SEED, DRAW_COUNT, audio),
            "score": simulated_meetings(args.score_seed, DRAW_COUNT, audio)}
        singles = []
        for index, item in enumerate(wer_items()):
            wav = Path(tmp) / f"single{index}.wav"
            normalize(str(item.path), str(wav), str(wav.with_suffix(".json")), "single", NormalizeOptions())
            singles.append((f"single{index}", load_wav(wav)))
    diarize = Diarizer(load_embedded_models(), OUT / "diarize-cache")
    prepared = {name: [prepare(diarize, m.uri, m.audio, options) for m in meetings] for name, meetings in draws.items()}
    refs = {name: {m.uri: m.reference for m in meetings} for name, meetings in draws.items()}
    prepared["dev"] = [prepare(diarize, item.uri, a, options) for item, a in items]
    refs["dev"] = {item.uri: rttm_turns(item.rttm, uri=item.uri) for item, _ in items}
    prepared["single"] = [prepare(diarize, uri, a, options) for uri, a in singles]
    refs["single"] = {}

    arrays = train_acoustic([r for r in prepared["train"] if r], refs["train"], args.hidden)
    detector = OverlapDetector(arrays | {name: np.zeros(1) for name in ("mean2", "std2", "w3", "b3")}, "")
    for group in prepared.values():
        for r in group:
            if r is not None:
                r.acoustic = detector.acoustic(r.mel)
    arrays |= train_stage_two([r for r in prepared["stage two"] if r], refs["stage two"])
    detector = OverlapDetector({name: np.asarray(arrays[name], dtype=np.float64) for name in ARRAYS}, "")
    digest = hashlib.sha256(b"".join(np.asarray(arrays[name], dtype=np.float32).tobytes() for name in ARRAYS))
    print(f"weights: {sum(v.size for v in arrays.values())} numbers, float32 sha256 {digest.hexdigest()[:16]}")
    if args.write:
        np.savez(WEIGHTS, **{name: np.asarray(arrays[name], dtype=np.float32) for name in ARRAYS})
        print(f"written: {WEIGHTS}")

    single_frames = sum(len(r.speech.frame_times) for r in prepared["single"] if r)
    print("\n| p >= | validation precision / recall | dev | score draw | single-speaker frames flagged |")
    print("|---|---|---|---|---|")
    for t in THRESHOLDS:
        cells = [detector_quality(prepared[name], refs[name], detector, t) for name in ("validation", "dev", "score")]
        flagged = sum(int(overlap_frames(detector(r.acoustic, r.top_two, r.path), t).sum())
                      for r in prepared["single"] if r and r.top_two is not None)
        print(f"| {t} | " + " | ".join(f"{100 * a:.0f} / {100 * b:.0f} %" for a, b, _ in cells) +
              f" | {100 * flagged / max(single_frames, 1):.1f} % |")

    def meetings_der(name: str, threshold, on: bool) -> dict:
        return der_scores([(m.uri, m.reference, hypothesis(r, detector if on else None, threshold, options),
                            [(0.0, len(m.audio) / SAMPLE_RATE)]) for r, m in zip(prepared[name], draws[name])])

    rows = {}
    for label, t in [("default (detector off)", None)] + [(f"detector p>={t}", t) for t in THRESHOLDS]:
        on = t is not None
        dev = per_file_components(items, {item.uri: hypothesis(r, detector if on else None, t, options)
                                          for (item, _), r in zip(items, prepared["dev"])})
        single_turns = [hypothesis(r, detector if on else None, t, options) for r in prepared["single"]]
        overlap = sum(overlap_time(turns) for turns in single_turns)
        rows[label] = {"dev": dev, "validation": meetings_der("validation", t, on),
                       "score": meetings_der("score", t, on),
                       "single": 100 * overlap / max(single_frames * FRAME / SAMPLE_RATE, 1e-9)}
    chosen = min(rows, key=lambda label: rows[label]["validation"]["der0"])
    print("\n| variant | dev c0 | dev c.25 | miss | fa | conf | trn03 fa | single-speaker overlap % | "
          "validation c0 | score c0 | score c.25 | score fa |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        files = list(r["dev"].values())
        total = sum(f[0.0]["total"] for f in files)
        part = {key: 100 * sum(f[0.0][key] for f in files) / total
                for key in ("missed detection", "false alarm", "confusion")}
        trn03 = r["dev"]["trn03"][0.0]
        print(f"| {label}{' (chosen)' if label == chosen else ''} | {pooled_der(files, 0.0):.1f} | "
              f"{pooled_der(files, 0.5):.1f} | {part['missed detection']:.1f} | {part['false alarm']:.1f} | "
              f"{part['confusion']:.1f} | {100 * trn03['false alarm'] / trn03['total']:.1f} | {r['single']:.2f} | "
              f"{r['validation']['der0']:.1f} | {r['score']['der0']:.1f} | {r['score']['der25']:.1f} | "
              f"{r['score']['fa']:.1f} |")
    print(f"\nchosen on validation draw {VALID_SEED}: {chosen}")


def cost(repeats: int = 5) -> None:
    """``embed_speech`` over the 13 dev recordings with the detector off and on, alternating,
    median of ``repeats`` each (the acoustic stage runs there; the second stage is per frame)."""
    import os
    import statistics
    import time

    from trax.diarization.embedded import embed_speech

    with tempfile.TemporaryDirectory() as tmp:
        items = load_items(Path(tmp))
    models = load_embedded_models()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for on in (False, True):
            start = time.perf_counter()
            for _, audio in items:
                embed_speech(models, audio, dataclasses.replace(EmbeddedOptions(), overlap_detector=on))
            times[on].append(time.perf_counter() - start)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"embed_speech, 13 dev recordings: detector off {off:.2f} s, on {on:.2f} s (x{on / off:.3f}); "
          f"load average {os.getloadavg()[0]:.1f}")
    speech = [embed_speech(models, audio, EmbeddedOptions(overlap_detector=True)) for _, audio in items]
    labelled: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for on in (False, True):
            options = dataclasses.replace(EmbeddedOptions(), overlap_detector=on)
            start = time.perf_counter()
            for one in speech:
                label_frames(one, options, overlap_detector=models.overlap)
            labelled[on].append(time.perf_counter() - start)
    off, on = statistics.median(labelled[False]), statistics.median(labelled[True])
    print(f"label_frames, same recordings: detector off {off:.2f} s, on {on:.2f} s (x{on / off:.3f}); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
