"""Overlapped-speech detector of the embedded diarizer (issue 31, item 4; off by default).

The embedded diarizer gives one speaker per 10 ms frame, so overlapped speech is always half
missed. This detector flags frames where two or more voices speak; a flagged frame then also gets
the nearest other speaker in time (as pyannote's overlap-aware resegmentation does: people
overlap where turns meet).

The model is small and runs in numpy, in two stages (:class:`OverlapDetector`): from the sound
(per frame, the log-mel energy of the encoder's own 40-band mel frames averaged over blocks around
the frame and each band's spread over ±15 frames: a second voice fills the dips between one
voice's syllables; one hidden layer), then with what the diarizer found (how well its two best
voices fit the frame, how near a speaker change is; a logistic regression). Its weights
(``data/overlap_detector.npz``, a few thousand numbers) are trained by ``bench/overlap.py --write``
on simulated conversations of benchdata voices that are in none of the scored sets, deterministic
by seed; why it is off by default: docs/benchmarks.md, "Overlap detector".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: The shipped weights.
WEIGHTS = Path(__file__).parent / "data" / "overlap_detector.npz"
#: Context of the features: mean log-mel of blocks of ``BLOCK`` frames centred at these offsets.
OFFSETS = (-30, -15, 0, 15, 30)
BLOCK = 7
#: Each band's spread is taken over ±``SPREAD`` frames.
SPREAD = 15
#: Frames the probability is averaged over before the threshold (0.15 s).
SMOOTH = 15
#: Shortest run of flagged frames kept (0.1 s): shorter ones are mostly a syllable's onset.
MIN_RUN = 10
#: Arrays of the weights file.
ARRAYS = ("mean", "std", "w1", "b1", "w2", "b2", "mean2", "std2", "w3", "b3")


def overlap_features(mel: np.ndarray) -> np.ndarray:
    """Detector features of mel power frames (frames x 40): per frame, the mean log-mel of the
    blocks at ``OFFSETS`` and each band's standard deviation over ±``SPREAD`` frames (the edges
    repeat the first and last frame)."""
    import numpy as np

    log = np.log10(np.maximum(np.asarray(mel, dtype=np.float64), 1e-6))
    pad = max(abs(o) for o in OFFSETS) + BLOCK
    padded = np.pad(log, ((pad, pad), (0, 0)), mode="edge")
    zero = np.zeros((1, log.shape[1]))
    cum = np.concatenate([zero, np.cumsum(padded, axis=0)])
    cum2 = np.concatenate([zero, np.cumsum(padded**2, axis=0)])
    index = np.arange(len(log)) + pad
    half = BLOCK // 2
    parts = [(cum[index + o + half + 1] - cum[index + o - half]) / BLOCK for o in OFFSETS]
    width = 2 * SPREAD + 1
    mean = (cum[index + SPREAD + 1] - cum[index - SPREAD]) / width
    variance = (cum2[index + SPREAD + 1] - cum2[index - SPREAD]) / width - mean**2
    parts.append(np.sqrt(np.maximum(variance, 0.0)))
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass(frozen=True)
class OverlapDetector:
    """The loaded detector, two stages.

    Stage one (acoustic, per piece of audio): standardised :func:`overlap_features`, one hidden
    ReLU layer, a logistic output. Stage two (per recording, after the frame labelling): a
    logistic regression on stage one's logit and :func:`stage_two_inputs` (how well the
    diarizer's two best voices fit the frame, how near a speaker change is), averaged over
    ``SMOOTH`` frames. Two stages because stage one needs the mel frames, which are not kept for
    the whole recording; stage two needs the speakers, known only at the end.

    Attributes:
        arrays: ``ARRAYS`` by name (float64).
        sha256: Of the weights file (provenance).
    """

    arrays: dict
    sha256: str

    def acoustic(self, mel: np.ndarray) -> np.ndarray:
        """Stage one: P(two or more voices) per mel frame from the sound alone (float32)."""
        import numpy as np

        if not len(mel):
            return np.zeros(0, dtype=np.float32)
        a = self.arrays
        hidden = np.maximum(((overlap_features(mel) - a["mean"]) / a["std"]) @ a["w1"] + a["b1"], 0.0)
        return _sigmoid(hidden @ a["w2"] + a["b2"]).astype(np.float32)

    def __call__(self, acoustic: np.ndarray, top_two: np.ndarray, path: np.ndarray) -> np.ndarray:
        """Stage two: P(overlap) per speech frame, smoothed over ``SMOOTH`` frames."""
        import numpy as np

        a = self.arrays
        x = (stage_two_inputs(acoustic, top_two, path) - a["mean2"]) / a["std2"]
        p = _sigmoid(x @ a["w3"] + a["b3"])
        padded = np.pad(p, SMOOTH // 2, mode="edge")
        return np.convolve(padded, np.ones(SMOOTH) / SMOOTH, mode="valid")[: len(p)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


#: Frames beyond which a speaker change no longer counts as near (1 s).
NEAR_FRAMES = 100


def stage_two_inputs(acoustic: np.ndarray, top_two: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Stage two's inputs per frame: stage one's logit, the best and second-best score of the
    frame against the speakers' voices (``top_two``, frames x 2), and the distance to the nearest
    speaker change of the labelling ``path`` (in seconds, at most 1): people overlap where turns meet."""
    import numpy as np

    p = np.clip(np.asarray(acoustic, dtype=np.float64), 1e-6, 1 - 1e-6)
    n = len(path)
    changes = np.flatnonzero(path[1:] != path[:-1])
    if len(changes):
        index = np.arange(n)
        near = np.abs(changes[nearest_sorted(changes, index)] - index)
    else:
        near = np.full(n, NEAR_FRAMES)
    return np.column_stack([np.log(p / (1 - p)), top_two[:, 0], top_two[:, 1],
                            np.minimum(near, NEAR_FRAMES) / NEAR_FRAMES])


def load_overlap_detector(path: Path = WEIGHTS) -> OverlapDetector:
    """The detector from its weights file (``ARRAYS``; no pickles)."""
    import numpy as np

    from trax.io.provenance import sha256_file

    with np.load(path, allow_pickle=False) as data:
        arrays = {name: np.asarray(data[name], dtype=np.float64) for name in ARRAYS}
    return OverlapDetector(arrays, sha256_file(path))


def overlap_frames(p: np.ndarray, threshold: float) -> np.ndarray:
    """Frames whose probability reaches ``threshold``, in runs of at least ``MIN_RUN`` frames."""
    import numpy as np

    on = np.asarray(p) >= threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    keep = np.zeros(len(on), dtype=bool)
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start >= MIN_RUN:
            keep[start:end] = True
    return keep


def nearest_other_speaker(path: np.ndarray) -> np.ndarray:
    """For each frame, the label of the nearest frame (by index) labelled another speaker; -1
    where there is none (one speaker) or the frame has no label. Ties go to the earlier frame."""
    import numpy as np

    path = np.asarray(path)
    second = np.full(len(path), -1, dtype=np.int64)
    for k in np.unique(path[path >= 0]):
        mine = np.flatnonzero(path == k)
        others = np.flatnonzero((path >= 0) & (path != k))
        if not len(others):
            continue
        second[mine] = path[others[nearest_sorted(others, mine)]]
    return second


def nearest_sorted(values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, the index of the nearest of ``values`` (ascending, not empty); ties go to
    the smaller value."""
    import numpy as np

    right = np.minimum(np.searchsorted(values, queries), len(values) - 1)
    left = np.maximum(right - 1, 0)
    return np.where(np.abs(values[right] - queries) < np.abs(values[left] - queries), right, left)
