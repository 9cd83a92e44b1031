"""An overlap detector trained on simulated mixtures (issue 31, item 4): does it lower dev DER?

Usage::

    .venv/bin/python bench/overlap.py                 # train, choose, score: one table
    .venv/bin/python bench/overlap.py --scores --overlap-max 2.5   # one variant of the detector

A small frame classifier (log-mel context -> one hidden layer -> P(two or more voices)) is trained
on simulated conversations (``common.simulated_meetings``) built only from voices in none of the
scored sets: the 11 benchdata-ml speakers and the columbia speaker. The dev DER recordings are AMI
people who never feed the meetings; the English single-speaker dev clips (``wer_items``: JFK, LJ
Speech, LibriSpeech, cards, ...) are held out of training so their false alarm is honest.
Training draws: seeds ``TRAIN_SEEDS`` (half in a synthetic room), half the turns overlapping.
The threshold and the way a second speaker is chosen (runner-up centroid, or the nearest other
speaker in time as pyannote's overlap-aware resegmentation does) are chosen on draw
``VALID_SEED`` of all the meeting voices (a detector scored on the voices it was trained on looks
better than it is: the same draw of the training voices is printed too), never on dev or on
``bench/diarize_choose.py``'s draws 1 / 2.

Rows: the embedded default, then each threshold x method (dev collar 0 / ±0.25 s with
miss / false alarm / confusion; trn03, the dev recording of one speaker; the held-out
single-speaker clips' added overlap as % of their speech; meeting draw 2, never used to choose).
Detail: bench/README.md, "overlap.py".
"""

from __future__ import annotations

import argparse
import dataclasses
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
    _frame_scores,
    _runs,
    label_frames,
    load_embedded_models,
    speech_mel,
)
from trax.io.annotation import Turn, rttm_turns
from trax.io.media import NormalizeOptions, load_wav, normalize
from trax.process import pin_blas_threads
from trax.quality.benchdata import wer_items

#: Draws of training mixtures (seeds far from the choosing / scoring draws 1-4 of the other benches).
TRAIN_SEEDS = (101, 102, 103, 104)
#: The draw the threshold and the second-speaker method are chosen on.
VALID_SEED = 111
#: Meetings per training / validation draw.
DRAW_COUNT = 12
#: Context of the features: mean log-mel of blocks of ``BLOCK`` frames centred at these offsets.
OFFSETS = (-30, -15, 0, 15, 30)
BLOCK = 7
#: Frames the probability is averaged over before the threshold (0.15 s).
SMOOTH = 15
#: Shortest overlap kept (frames).
MIN_RUN = 10


def training_voices() -> dict:
    """Voices in no scored set: the benchdata-ml speakers and the columbia speaker."""
    return {person: clips for person, clips in meeting_voices().items()
            if person == "columbia" or "_" in person}


def features(mel: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: the mean log-mel of blocks around it (``OFFSETS``) and each band's spread
    over ±15 frames (a second voice fills the gaps between one voice's harmonics and syllables)."""
    log = np.log10(np.maximum(mel.astype(np.float64), 1e-6))
    n = len(log)
    pad = max(abs(o) for o in OFFSETS) + BLOCK
    padded = np.pad(log, ((pad, pad), (0, 0)), mode="edge")
    cum = np.concatenate([np.zeros((1, log.shape[1])), np.cumsum(padded, axis=0)])
    cum2 = np.concatenate([np.zeros((1, log.shape[1])), np.cumsum(padded ** 2, axis=0)])
    idx = np.arange(n) + pad
    half = BLOCK // 2
    parts = [(cum[idx + o + half + 1] - cum[idx + o - half]) / BLOCK for o in OFFSETS]
    mean = (cum[idx + 16] - cum[idx - 15]) / 31
    var = (cum2[idx + 16] - cum2[idx - 15]) / 31 - mean ** 2
    parts.append(np.sqrt(np.maximum(var, 0.0)))
    return np.concatenate(parts, axis=1).astype(np.float32)


def frame_counts(frame_times: np.ndarray, reference: list) -> np.ndarray:
    """How many reference speakers talk at each frame's centre."""
    centres = (frame_times + FRAME / 2) / SAMPLE_RATE
    counts = np.zeros(len(centres), dtype=np.int32)
    for turn in reference:
        start, end = (turn.start, turn.end) if hasattr(turn, "start") else turn[:2]
        counts[(centres >= start) & (centres < end)] += 1
    return counts


def recording_features(audio: np.ndarray, options: EmbeddedOptions) -> tuple[np.ndarray, np.ndarray]:
    """(frame times, features) of a recording's VAD speech, the frames the diarizer labels."""
    _, times, mel = speech_mel(audio, options)
    return times, features(mel)


def score_features(speech, details: dict, turns: list[Turn]) -> np.ndarray:
    """Per frame, from the diarizer's own labelling: the best and second-best score of the
    covering windows against the speakers' voice embeddings, their margin, and how far (in
    seconds, up to 1) the nearest speaker change lies (overlap happens where turns meet)."""
    path, names = frame_path(speech.frame_times, turns)
    n = len(path)
    voices = details.get(SPEAKER_EMBEDDINGS) or {}
    if len(names) >= 1 and all(name in voices for name in names):
        centroids = np.stack([voices[name] for name in names])
        scores = np.sort(_frame_scores(speech, speech.embeddings.astype(np.float64) @ centroids.T, 0, n), axis=1)
    else:
        scores = np.zeros((n, 1))
    top = scores[:, -1]
    second = scores[:, -2] if scores.shape[1] > 1 else np.zeros(n)
    changes = np.flatnonzero(path[1:] != path[:-1])
    if len(changes):
        index = np.arange(n)
        right = np.minimum(np.searchsorted(changes, index), len(changes) - 1)
        left = np.maximum(right - 1, 0)
        near = np.minimum(np.abs(changes[right] - index), np.abs(changes[left] - index))
    else:
        near = np.full(n, 100)
    return np.stack([top, second, top - second, np.minimum(near, 100) / 100.0], axis=1).astype(np.float32)


def train(xs: list[np.ndarray], ys: list[np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """Fit the classifier on every other frame of the given recordings; weights as numpy arrays."""
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([a[::2] for a in xs])
    y = np.concatenate([b[::2] for b in ys])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=60, early_stopping=True,
                          random_state=0, batch_size=256)
    model.fit((x - mean) / std, y)
    print(f"trained on {len(y)} frames x {x.shape[1]} features ({100 * y.mean():.1f} % overlapped), "
          f"{model.n_iter_} epochs")
    return {"mean": mean, "std": std, "w1": model.coefs_[0], "b1": model.intercepts_[0],
            "w2": model.coefs_[1][:, 0], "b2": model.intercepts_[1]}


def probabilities(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(overlap) per frame, averaged over ``SMOOTH`` frames."""
    h = np.maximum(((x - weights["mean"]) / weights["std"]) @ weights["w1"] + weights["b1"], 0.0)
    p = 1.0 / (1.0 + np.exp(-np.clip(h @ weights["w2"] + weights["b2"], -30.0, 30.0)))
    kernel = np.ones(SMOOTH) / SMOOTH
    return np.convolve(np.pad(p, SMOOTH // 2, mode="edge"), kernel, mode="valid")[: len(p)]


def flagged(p: np.ndarray, threshold: float) -> np.ndarray:
    """Frames above ``threshold`` in runs of at least ``MIN_RUN`` frames."""
    on = p >= threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    keep = np.zeros_like(on)
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a >= MIN_RUN:
            keep[a:b] = True
    return keep


def frame_path(frame_times: np.ndarray, turns: list[Turn]) -> tuple[np.ndarray, list[str]]:
    """Each frame's speaker index from the diarizer's turns (-1: none) and the speaker names."""
    names = sorted({t.speaker for t in turns})
    path = np.full(len(frame_times), -1)
    seconds = frame_times / SAMPLE_RATE
    for turn in turns:
        path[(seconds >= turn.start - 1e-6) & (seconds < turn.end - 1e-6)] = names.index(turn.speaker)
    return path, names


def second_speaker(speech, details: dict, turns: list[Turn], flags: np.ndarray, method: str) -> list[Turn]:
    """The turns plus a second speaker on the flagged frames: ``runner-up`` (the speaker whose
    voice embedding scores second on the frame) or ``nearest`` (the closest frame in time labelled
    another speaker)."""
    path, names = frame_path(speech.frame_times, turns)
    if len(names) < 2 or not flags.any():
        return list(turns)
    second = np.full(len(path), -1)
    if method == "runner-up":
        voices = details[SPEAKER_EMBEDDINGS]
        centroids = np.stack([voices[name] for name in names])
        scores = _frame_scores(speech, speech.embeddings.astype(np.float64) @ centroids.T, 0, len(path))
        scores[np.arange(len(path)), np.maximum(path, 0)] = -np.inf
        second = np.argmax(scores, axis=1)
    else:
        index = np.arange(len(path))
        for k in range(len(names)):
            others = np.flatnonzero((path >= 0) & (path != k))
            mine = np.flatnonzero(path == k)
            if not len(others) or not len(mine):
                continue
            right = np.minimum(np.searchsorted(others, index[mine]), len(others) - 1)
            left = np.maximum(right - 1, 0)
            pick = np.where(np.abs(others[right] - mine) < np.abs(others[left] - mine), others[right], others[left])
            second[mine] = path[pick]
    second = np.where(flags & (path >= 0), second, -1)
    extra = _runs(speech.frame_times, second)
    return list(turns) + [Turn(t.start, t.end, names[int(t.speaker[1:])]) for t in extra]


@dataclasses.dataclass
class Prepared:
    """A recording embedded and labelled once, with its detector features and probabilities."""

    uri: str
    speech: object
    turns: list
    details: dict
    x: np.ndarray
    p: np.ndarray | None = None


def prepare(diarize: Diarizer, uri: str, audio: np.ndarray, options: EmbeddedOptions, scores: bool) -> Prepared:
    speech = diarize.embeddings(uri, audio, options)
    if speech is None:
        return Prepared(uri, None, [], {}, np.zeros((0, 1)))
    turns, details = label_frames(speech, options)
    times, x = recording_features(audio, options)
    assert np.array_equal(times, speech.frame_times), uri
    if scores:
        x = np.concatenate([x, score_features(speech, details, turns)], axis=1)
    return Prepared(uri, speech, turns, details, x)


def hypothesis(r: Prepared, threshold: float | None, method: str) -> list[Turn]:
    if threshold is None or r.speech is None:
        return r.turns
    return second_speaker(r.speech, r.details, r.turns, flagged(r.p, threshold), method)


def detector_quality(prepared: list[Prepared], references: dict, threshold: float) -> tuple[float, float]:
    """Frame precision and recall of the flagged frames against the reference overlap."""
    tp = fp = fn = 0
    for r in prepared:
        if r.speech is None:
            continue
        truth = frame_counts(r.speech.frame_times, references[r.uri]) >= 2
        flags = flagged(r.p, threshold)
        tp += int((flags & truth).sum())
        fp += int((flags & ~truth).sum())
        fn += int((~flags & truth).sum())
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score-seed", type=int, default=2, help="the meeting draw scored (never used to choose)")
    parser.add_argument("--overlap-share", type=float, default=0.5, help="training mixtures: share of overlapping turns")
    parser.add_argument("--overlap-max", type=float, default=1.0, help="training mixtures: longest overlap (s)")
    parser.add_argument("--scores", action="store_true", help="add the diarizer's frame scores to the features")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units")
    parser.add_argument("--train-seeds", default=",".join(map(str, TRAIN_SEEDS)), help="training draws (comma list)")
    args = parser.parse_args()
    pin_blas_threads()
    options = EmbeddedOptions()
    voices = training_voices()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Audio(Path(tmp))
        items = load_items(Path(tmp))
        valid = simulated_meetings(VALID_SEED, DRAW_COUNT, audio)
        seen = simulated_meetings(VALID_SEED, DRAW_COUNT, audio, voices=voices)
        scored = simulated_meetings(args.score_seed, DRAW_COUNT, audio)
        mixtures = [m for i, seed in enumerate(int(v) for v in args.train_seeds.split(",")) for m in simulated_meetings(
            seed, DRAW_COUNT, audio, voices=voices, room=bool(i % 2), overlap_share=args.overlap_share,
            overlap_s=(0.2, args.overlap_max))]
        singles = []
        for index, item in enumerate(wer_items()):
            wav = Path(tmp) / f"single{index}.wav"
            normalize(str(item.path), str(wav), str(wav.with_suffix(".json")), "single", NormalizeOptions())
            singles.append((f"single{index}", load_wav(wav)))
    diarize = Diarizer(load_embedded_models(), OUT / "diarize-cache")

    def prepared(pairs) -> list[Prepared]:
        return [prepare(diarize, uri, a, options, args.scores) for uri, a in pairs]

    training = prepared((m.uri, m.audio) for m in mixtures)
    ready = [r for r in training if r.speech is not None]
    references = {m.uri: m.reference for m in mixtures}
    weights = train([r.x for r in ready], [frame_counts(r.speech.frame_times, references[r.uri]) >= 2 for r in ready],
                    args.hidden)
    print(f"weights: {sum(v.size for v in weights.values())} numbers")
    dev = prepared((item.uri, a) for item, a in items)
    val = prepared((m.uri, m.audio) for m in valid)
    val_seen = prepared((f"{m.uri}t", m.audio) for m in seen)
    score = prepared((m.uri, m.audio) for m in scored)
    single = prepared(singles)
    for r in dev + val + val_seen + score + single:
        if r.speech is not None:
            r.p = probabilities(weights, r.x)
    refs = {"validation": {m.uri: m.reference for m in valid}, "seen": {f"{m.uri}t": m.reference for m in seen}, "score": {m.uri: m.reference for m in scored},
            "dev": {item.uri: rttm_turns(item.rttm, uri=item.uri) for item, _ in items}}

    thresholds = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    variants = [("default (no overlap)", None, "")] + [
        (f"{method} p>={t}", t, method) for method in ("runner-up", "nearest") for t in thresholds]

    def meetings_der(prepared, meetings, threshold, method):
        return der_scores([(m.uri, m.reference, hypothesis(r, threshold, method), [(0.0, len(m.audio) / SAMPLE_RATE)])
                           for r, m in zip(prepared, meetings)])

    speech_single = sum(len(r.speech.frame_times) for r in single if r.speech is not None)
    print("\n| p >= | validation precision / recall | same draw, training voices | dev | score draw | "
          "single-speaker frames flagged |")
    print("|---|---|---|---|---|---|")
    for t in thresholds:
        cells = [detector_quality(group, refs[name], t) for name, group in
                 (("validation", val), ("seen", val_seen), ("dev", dev), ("score", score))]
        raw = sum(int(flagged(r.p, t).sum()) for r in single if r.speech is not None)
        print(f"| {t} | " + " | ".join(f"{100 * a:.0f} / {100 * b:.0f} %" for a, b in cells) +
              f" | {100 * raw / max(speech_single, 1):.1f} % |")
    rows = {}
    for label, t, method in variants:
        files = per_file_components(items, {r.uri: hypothesis(r, t, method) for r in dev})
        added = sum(sum(tt.end - tt.start for tt in hypothesis(r, t, method)) - sum(tt.end - tt.start for tt in r.turns)
                    for r in single)
        rows[label] = {"dev": files, "valid": meetings_der(val, valid, t, method),
                       "seen": meetings_der(val_seen, seen, t, method),
                       "score": meetings_der(score, scored, t, method),
                       "single": 100 * added / max(speech_single * FRAME / SAMPLE_RATE, 1e-9)}
    chosen = min(rows, key=lambda label: rows[label]["valid"]["der0"])
    print("\n| variant | dev c0 | dev c.25 | miss | fa | conf | trn03 fa | single-speaker added % | valid c0 | seen c0 | "
          "score c0 | score c.25 | score fa |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        files = list(r["dev"].values())
        total = sum(f[0.0]["total"] for f in files)
        part = {key: 100 * sum(f[0.0][key] for f in files) / total
                for key in ("missed detection", "false alarm", "confusion")}
        trn03 = r["dev"]["trn03"][0.0]
        print(f"| {label}{' (chosen)' if label == chosen else ''} | {pooled_der(files, 0.0):.1f} | "
              f"{pooled_der(files, 0.5):.1f} | {part['missed detection']:.1f} | {part['false alarm']:.1f} | "
              f"{part['confusion']:.1f} | {100 * trn03['false alarm'] / trn03['total']:.1f} | {r['single']:.2f} | "
              f"{r['valid']['der0']:.1f} | {r['seen']['der0']:.1f} | {r['score']['der0']:.1f} | {r['score']['der25']:.1f} | "
              f"{r['score']['fa']:.1f} |")
    print(f"\nchosen on validation draw {VALID_SEED}: {chosen}")

if __name__ == "__main__":
    main()
