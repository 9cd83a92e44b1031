"""Background statistics of the embedded diarizer's ``embedding_transform`` (issue 31).

Usage::

    .venv/bin/python bench/embedding_transform.py            # fit and print; write nothing
    .venv/bin/python bench/embedding_transform.py --write    # ... and write the shipped file
    .venv/bin/python bench/embedding_transform.py --shrinkage 0.2   # another whitening shrinkage
    .venv/bin/python bench/embedding_transform.py --heldout  # + meetings of voices the fit never saw

Embeds the speech of every voice ``bench/meetings.py`` draws its meetings from
(``common.meeting_voices``: none is in a scored dev recording) with the diarizer's own 1-s windows
(``embed_speech`` with the default options: VAD, levelling, window and hop), one clip at a time,
and fits:

* ``mean``: the background mean, the average of the voices' mean window embeddings (each voice
  counts once, however much it speaks);
* ``projection``: within-speaker whitening of the background-centred, re-normalised windows: the
  average of the voices' window covariances, shrunk towards a multiple of the identity by
  ``--shrinkage``, to the power -1/2 (256 x 256).

Deterministic: the same clips and code give the same arrays (the sha256 of their float32 bytes is
printed). Then prints, for the same voices (in-sample: only to see the scale of the distances a
cut must be chosen on, never to choose), the cosine distance between windows of one voice and of
two voices under each transform. ``--write`` writes ``src/trax/diarization/data/embedding_background.npz``.

``--heldout``: the meetings of ``bench/diarize_choose.py`` are drawn from the very voices the
background is fitted on, so their gain may be in-sample. This splits the voices in two (the
benchdata-ml speakers; the others), fits on one half, and scores simulated meetings (draw
``HELDOUT_SEED``, 12 meetings) of the other half, both ways round, for the default and each
transform at a few cuts, with the background fitted on the other half and on all voices.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np
from common import Audio, Diarizer, der_scores, meeting_voices, simulated_meetings

from trax.diarization import embedded
from trax.diarization.embedded import BACKGROUND, EmbeddedOptions, embed_speech, load_embedded_models, \
    transform_embeddings
from trax.process import pin_blas_threads

#: Shrinkage of the within-speaker covariance towards the identity (a priori: half-way, since
#: 17 voices give a noisy 256 x 256 covariance).
SHRINKAGE = 0.5
#: The draw of held-out meetings (``--heldout``).
HELDOUT_SEED = 21
#: Cuts tried with each transform in ``--heldout``.
HELDOUT_CUTS = (0.7, 0.75, 0.8)


def voice_windows(models, audio: Audio) -> dict[str, np.ndarray]:
    """Person -> their window embeddings (float64, unit rows), all clips in order."""
    options = EmbeddedOptions()
    result = {}
    for person, clips in sorted(meeting_voices().items()):
        parts = []
        for clip in clips:
            speech = embed_speech(models, audio.clip(clip), options)
            if speech is not None:
                parts.append(speech.embeddings.astype(np.float64))
        if parts:
            result[person] = np.concatenate(parts)
    return result


def fit(windows: dict[str, np.ndarray], shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(background mean, whitening projection) of the voices' windows."""
    mean = np.mean([x.mean(axis=0) for x in windows.values()], axis=0)
    dims = len(mean)
    within = np.zeros((dims, dims))
    for x in windows.values():
        centred = transform_embeddings(x, "background", (mean, np.eye(dims)))
        centred = centred - centred.mean(axis=0)
        within += centred.T @ centred / len(centred)
    within /= len(windows)
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / dims * np.eye(dims)
    values, vectors = np.linalg.eigh(within)
    projection = vectors @ np.diag(values ** -0.5) @ vectors.T
    return mean, projection


def distances(windows: dict[str, np.ndarray], kind: str, background) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances between windows of one voice and between windows of two voices (every
    4th window of each voice), after transform ``kind`` (``center``: per voice pair, as a
    recording of those two people would be centred)."""
    people = sorted(windows)
    same, other = [], []
    for i, a in enumerate(people):
        x = windows[a][::4]
        if kind != "center":
            x = transform_embeddings(x, kind, background)
            d = 1 - x @ x.T
            same.append(d[np.triu_indices(len(x), 1)])
        for b in people[i + 1 :]:
            y = windows[b][::4]
            if kind == "center":
                both = transform_embeddings(np.concatenate([x, y]), kind)
                xa, yb = both[: len(x)], both[len(x) :]
                d = 1 - xa @ xa.T
                same.append(d[np.triu_indices(len(xa), 1)])
            else:
                yb = transform_embeddings(y, kind, background)
                xa = x
            other.append((1 - xa @ yb.T).ravel())
    return np.concatenate(same), np.concatenate(other)


def heldout(models, windows: dict[str, np.ndarray], shrinkage: float, background) -> None:
    """Meetings of one half of the voices, with the background fitted on the other half (and on all)."""
    voices = meeting_voices()
    halves = {"benchdata-ml": sorted(p for p in voices if "_" in p), "others": sorted(p for p in voices if "_" not in p)}
    base = EmbeddedOptions()
    variants = [("default", base, None)]
    for kind in ("background", "whiten"):
        for cut in HELDOUT_CUTS:
            options = EmbeddedOptions(embedding_transform=kind, cluster_threshold=cut, distinct_speaker_distance=cut + 0.06)
            variants += [(f"{kind} cut={cut}, fitted on the other half", options, "other"),
                         (f"{kind} cut={cut}, fitted on all voices", options, "all")]
    print("\n| meetings of | variant | DER c0 | DER c.25 | spk ok | spk err |\n|---|---|---|---|---|---|")
    for name, people in halves.items():
        fitted_other = fit({p: x for p, x in windows.items() if p not in people}, shrinkage)
        with tempfile.TemporaryDirectory() as tmp:
            meetings = simulated_meetings(HELDOUT_SEED, 12, Audio(Path(tmp)), voices={p: voices[p] for p in people})
        diarize = Diarizer(models)  # a fresh cache: both halves' meetings have the same uris
        for label, options, fitted in variants:
            if fitted is not None:  # the background label_frames reads (its per-path cache)
                embedded._BACKGROUNDS[BACKGROUND] = fitted_other if fitted == "other" else background
            r = der_scores([(m.uri, m.reference, diarize(m.uri, m.audio, options), [(0.0, len(m.audio) / 16000)])
                            for m in meetings])
            print(f"| {name} ({len(people)} voices) | {label} | {r['der0']:.1f} | {r['der25']:.1f} | "
                  f"{r['count_ok']}/{r['items']} | {r['count_err']:+.2f} |")
    embedded._BACKGROUNDS.pop(BACKGROUND, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {BACKGROUND.name}")
    parser.add_argument("--shrinkage", type=float, default=SHRINKAGE)
    parser.add_argument("--heldout", action="store_true", help="score meetings of voices the fit did not see")
    args = parser.parse_args()
    pin_blas_threads()
    models = load_embedded_models()
    with tempfile.TemporaryDirectory() as tmp:
        windows = voice_windows(models, Audio(Path(tmp)))
    print(f"{len(windows)} voices, {sum(len(x) for x in windows.values())} windows "
          f"({min(len(x) for x in windows.values())}-{max(len(x) for x in windows.values())} per voice)")
    mean, projection = fit(windows, args.shrinkage)
    arrays = {"mean": mean.astype(np.float32), "projection": projection.astype(np.float32)}
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays.values())).hexdigest()[:16]
    print(f"background: |mean| {np.linalg.norm(mean):.3f}, shrinkage {args.shrinkage}, sha256 prefix {digest}")
    background = (arrays["mean"].astype(np.float64), arrays["projection"].astype(np.float64))
    print("\n| transform | one voice: median | p90 | two voices: p10 | median | overlap of the two |")
    print("|---|---|---|---|---|---|")
    for kind in ("none", "center", "background", "whiten"):
        same, other = distances(windows, kind, background)
        # Share of the two-voice distances below the one-voice 90th percentile.
        print(f"| {kind} | {np.median(same):.3f} | {np.quantile(same, 0.9):.3f} | {np.quantile(other, 0.1):.3f} | "
              f"{np.median(other):.3f} | {np.mean(other < np.quantile(same, 0.9)):.3f} |")
    if args.heldout:
        heldout(models, windows, args.shrinkage, background)
    if args.write:
        BACKGROUND.parent.mkdir(parents=True, exist_ok=True)
        with BACKGROUND.open("wb") as handle:
            np.savez(handle, **arrays)
        print(f"\nwrote {BACKGROUND}")


if __name__ == "__main__":
    main()
