"""The offline diarization backend: Silero VAD + resemblyzer embeddings + clustering + smoothing.

Weights come from PyPI packages (Silero VAD v6 inside ``faster-whisper``, resemblyzer's
``pretrained.pt`` inside ``resemblyzer``), so it works with no network and no token. Nothing here
imports torch or librosa: the voice encoder runs in ONNX Runtime from weights exported at setup,
its mel features in numpy (:mod:`trax.diarization.encoder`).

Steps, for 16 kHz mono audio:

1. **Speech.** Silero VAD speech regions (``vad_threshold``; gaps shorter than
   ``vad_min_silence_ms`` are bridged, regions padded by ``vad_pad_ms``).
2. **Embeddings.** The speech regions are concatenated and resemblyzer's mel frames (10 ms)
   computed once; windows of ``window_s`` every ``hop_s`` go through the LSTM speaker encoder in
   blocks of ``EMBED_BLOCK_WINDOWS``, giving L2-normalised 256-d embeddings. A window may span
   the end of one region and the start of the next; the frame-level labelling below decides where a change falls.
3. **Clustering.** Agglomerative clustering, average linkage on cosine distance, cut at
   ``cluster_threshold`` (automatic speaker count; or, with ``count_rule: silhouette``, at the
   best-separated number of clusters), or at ``num_speakers`` / clamped to
   ``[min_speakers, max_speakers]``. Clusters holding less than ``min_speaker_s`` of windows are
   merged into the nearest cluster when the count is automatic, unless they are a distinct voice
   (``distinct_speaker_s``, ``distinct_speaker_distance``). Long recordings are clustered in
   chunks whose clusters are then linked (``cluster_chunk_windows``), never all windows at once.

Memory does not grow with the recording: audio comes in pieces of at most 5 minutes
(:func:`trax.io.media.audio_pieces`; VAD, mel frames and embeddings are computed per piece), and the
frame labelling runs block by block. What is kept for the whole recording is small: one 256-d
float32 embedding per 0.5 s of speech and one index per 10 ms speech frame (≈ 45 MB at 4 hours).
4. **Frame labels.** Every 10 ms speech frame is scored against each cluster centroid by the
   cosine similarity of the windows covering it; a Viterbi pass with ``switch_penalty`` per speaker
   change picks the label sequence, so short spurious switches disappear. Then each speaker's
   centroid is re-estimated from the windows it won alone, speakers left with under
   ``resegment_min_s`` are dropped, and the frames are labelled again (``resegment_iterations``).
5. **Overlap** (``overlap_detector``, off by default): frames that a small detector
   (:mod:`trax.diarization.overlap`) flags as overlapped speech also get the nearest other
   speaker in time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trax.io.annotation import Turn
from trax.process import import_faster_whisper

if TYPE_CHECKING:
    import numpy as np

    from trax.io.media import AudioPiece

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: resemblyzer's mel frame step (10 ms) in samples.
FRAME = 160
#: How the automatic speaker count is chosen (``EmbeddedOptions.count_rule``).
COUNT_RULES = ("threshold", "silhouette", "spread")


@dataclass(frozen=True)
class EmbeddedOptions:
    """Settings of the embedded backend (config ``diarize.embedded``); defaults chosen on the dev
    set with ``bench/diarize.py`` (see the closing note of issue 7 for the sweep).

    Attributes:
        vad_threshold: Silero speech probability above which a 32 ms chunk is speech. Low (0.2)
            because missed speech costs more DER than a little included silence.
        vad_min_silence_ms: Pauses shorter than this stay inside one speech region.
        vad_pad_ms: Padding added around each speech region.
        window_s: Length of one embedding window. Shorter windows localise speaker changes
            better but give noisier embeddings; resemblyzer was trained on 1.6 s partials.
        hop_s: Step between windows.
        cluster_threshold: Cosine-distance cut of the average-linkage dendrogram when the number
            of speakers is automatic. Higher merges more (fewer speakers). 0.35 with speech at
            -20 dBFS was chosen by ``bench/diarize.py --loo`` in every one of the 13
            leave-one-out folds (issue 14).
        min_speaker_s: A cluster with less window time than this is merged into its nearest
            neighbour (automatic count only): a speaker who "talks" for under a second is
            almost always a noisy window, not a person. Not a cluster that is a distinct voice,
            though (the next two settings).
        distinct_speaker_s: A cluster under ``min_speaker_s`` but with at least this much window
            time stays its own speaker when its average cosine distance to the nearest cluster
            exceeds ``distinct_speaker_distance``: someone who speaks for two or three seconds
            is a person too, and merging them into another speaker gives that speaker's name to
            their words (issue 14: three people merged into one named speaker).
        distinct_speaker_distance: See ``distinct_speaker_s``; None = always merge (before issue
            14). Same-voice fragments of a few windows lie 0.35-0.45 from their voice, other
            people 0.42-0.46, so the two overlap: 1.5 s / 0.41 were chosen with
            ``bench/speakers.py --seed 99`` and ``--seed 7`` (40 recordings; unenrolled speech
            given a name 2.5 -> 1.3 %, enrolled named 86.8 -> 87.0 %) and checked on the default
            seed-14 bench (0.4 -> 0.5 % and 86.6 -> 93.5 %). Dev DER: collar 0 unchanged, ±0.25 s
            +0.5 pp, exact speaker count 3 -> 4 of 13 (``bench/diarize.py``).
        switch_penalty: Viterbi cost of a speaker change between consecutive 10 ms frames, in
            units of cosine similarity. 0 = plain per-frame argmax.
        overlap_margin: A frame also gets the runner-up speaker when that speaker's score is
            within this margin of the chosen one's (overlapped speech). 0 = never: every margin
            tried (0.01-0.08) raised the false alarm on simulated meetings and the collar-0 DER
            on dev (``bench/diarize_choose.py --grid overlap``).
        overlap_detector: Flag overlapped speech with the small detector of
            :mod:`trax.diarization.overlap` (trained on simulated conversations of benchdata voices)
            and give each flagged frame also the nearest other speaker in time. Off by default: on
            the dev recordings it lowers the DER a little, but not on the unscored simulated
            meetings (docs/benchmarks.md, "Overlap detector").
        overlap_threshold: Detector probability at or above which a frame counts as overlapped;
            chosen on a draw of simulated meetings that no bench scores (``bench/overlap.py``).
        count_rule: How the automatic speaker count is chosen. ``threshold``: the dendrogram cut at
            ``cluster_threshold``. ``silhouette``: of the cuts into 2..``MAX_AUTO_SPEAKERS``
            clusters (each with small clusters merged), the one whose windows are best separated
            (mean silhouette, :func:`silhouette`); scale-free, so it does not assume how far apart
            two voices are. On simulated meetings of voices from different corpora
            (``bench/meetings.py``) it beat the threshold; on the same-room dev meetings it lost
            (``bench/diarize.py``: 38.7 vs 34.0 % DER at collar 0), so it is not the default.
            ``spread``: of the cuts into 1..``MAX_AUTO_SPEAKERS`` clusters (small clusters merged), the
            one with the lowest BIC-like cost :func:`spread_cost` — the windows' spread around
            their speakers' centroids against ``count_penalty`` per speaker (issue 31). Not the
            default: fitted on the unscored meetings draw it lost on the scoring draw and on dev
            (``bench/diarize_choose.py``: 35.4 and 37.5 vs 32.4 % DER at collar 0).
        count_penalty: ``spread`` rule: cost of one more speaker, in units of ``log(windows)``
            (BIC's ``d/2`` with the embeddings' effective dimension unknown, hence fitted). Higher
            means fewer speakers. 2.0 was the best on the choosing draw of ``bench/meetings.py``.
        silhouette_min: ``silhouette`` rule: a best silhouette below this means one speaker. The
            17 single-voice recordings of ``bench/meetings.py``'s voices (up to 90 s each) scored
            0.00-0.24, hence 0.25.
        speech_dbfs: The speech of each piece is levelled to this RMS (dBFS) before embedding
            (None: the recording's own gain), so embeddings do not depend on how loud a voice was
            recorded; see :func:`level_speech`. Levelling also separates voices better:
            leave-one-out DER 41.1 -> 34.0 % at collar 0 (``bench/diarize.py --loo``).
        cluster_window_s: Windows of this length (with ``cluster_hop_s``) are embedded from the
            same mel frames and clustered instead of the ``window_s`` ones (None: cluster the
            ``window_s`` windows). Longer windows give steadier voice embeddings (resemblyzer was
            trained on 1.6 s), while the frame labelling keeps the short windows and their
            sharper speaker changes: each short window takes the cluster of the long window
            whose centre is nearest to its own. None by default: 3.0 s (chosen on the unscored
            meetings draw) scored 28.7 vs 32.4 % on the scoring draw (turns of 1.5-8 s) but
            38.1 vs 32.4 % on dev, where turns change every second or two and a long window
            spans two voices; on meeting draws 3 / 4 the same choice lost (26.5 vs 24.2 %)
            (``bench/diarize_choose.py``).
        cluster_hop_s: Step between clustering windows (None: ``hop_s``).
        split_distance: Second pass (automatic count only): each cluster is split in two by
            spherical 2-means (:func:`split_clusters`), and the split is kept when both halves
            hold at least ``split_min_s`` of windows and their centroids lie more than this
            cosine distance apart (centroids average out the noise of single 1-s windows).
            None = off: ``bench/diarize.py --loo`` chose no split in any of the 13 folds (0.2 with
            ``split_min_s`` 1: dev 42.5 % DER at collar 0; 0.25: 33.9 %), and it raised the count
            error on simulated meetings (``bench/meetings.py``).
        split_min_s: See ``split_distance``.
        merge_distance: Second pass, after the splits: two clusters whose centroids lie closer
            than this cosine distance are merged (:func:`merge_close_clusters`), not below
            ``min_speakers``. None = off: 0.2 helps the overcounted simulated meetings (scoring
            draw 33.2 -> 31.2 %) but merges the close same-room voices of dev (34.0 -> 39.6 %), and
            leave-one-out on dev never chose it.
        resegment_iterations: After the first frame labelling, each speaker's centroid is
            re-estimated from the windows the labelling gave to that speaker alone (no speaker
            change inside) and the frames are labelled again (VBx-style resegmentation with hard
            assignments); this many times. 0 = off.
        resegment_min_s: Resegmentation, automatic count only: before each relabelling, speakers
            with less labelled speech than this are dropped, fewest first, never below
            ``min_speakers`` (their frames go to the others): a cluster that the smoothing
            shrank to a few seconds is mostly stray windows of other voices. A distinct voice
            stays, as in :func:`_merge_small` (``distinct_speaker_s``/``distinct_speaker_distance``:
            without this, unenrolled speech given a name rose 3.5 -> 4.4 % on
            ``bench/speakers.py --seed 99``). 1 iteration and 4.0 s were chosen by
            ``bench/diarize.py --loo`` in 12 of 13 folds (the 13th: 1 iteration, 2.0 s):
            leave-one-out dev DER 34.0 -> 33.0 % at collar 0, 22.5 -> 21.7 % at ±0.25 s, exact
            count 4 -> 3 of 13 (in-sample 4, mean error -1.00 -> -1.15). Simulated meetings, never
            used to choose: scoring draw 33.2 -> 32.4 %, exact count 3 -> 6 of 12, mean error
            +1.08 -> +0.58; draws 2-4 pooled 29.7 -> 29.3 %, exact 8 -> 16 of 36.
            ``bench/speakers.py`` (seeds 14 / 99 / 7): enrolled named 96.8 / 96.3 / 92.3 ->
            96.8 / 96.5 / 93.0 %, unenrolled named 0.5 / 3.5 / 0.7 % unchanged.
        cluster_chunk_windows: Recordings with at most this many windows are clustered exactly
            (average linkage over all windows: a condensed distance matrix of n²/2 doubles, 16 MB
            at 2000 windows ≈ 17 minutes of speech). Longer ones are clustered in consecutive
            chunks of this many windows, and the chunks' clusters are then linked by exact
            average linkage on cluster means (see :func:`cluster`), so memory stays bounded:
            an 8-hour file would otherwise need a 13 GB matrix. Not a config key: it changes
            no result on recordings under ~17 minutes of speech, and ``bench/diarize.py --concat``
            measures it on longer ones.
    """

    vad_threshold: float = 0.3
    vad_min_silence_ms: int = 300
    vad_pad_ms: int = 300
    window_s: float = 1.0
    hop_s: float = 0.5
    cluster_threshold: float = 0.35
    min_speaker_s: float = 4.0
    distinct_speaker_s: float = 1.5
    distinct_speaker_distance: float | None = 0.41
    switch_penalty: float = 10.0
    overlap_margin: float = 0.0
    overlap_detector: bool = False
    overlap_threshold: float = 0.6
    speech_dbfs: float | None = -20.0
    count_rule: str = "threshold"
    silhouette_min: float = 0.25
    count_penalty: float = 2.0
    cluster_window_s: float | None = None
    cluster_hop_s: float | None = None
    split_distance: float | None = None
    split_min_s: float = 2.0
    merge_distance: float | None = None
    resegment_iterations: int = 1
    resegment_min_s: float = 4.0
    cluster_chunk_windows: int = 2000

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> EmbeddedOptions:
        """Options from the ``diarize.embedded`` section.

        Raises:
            TraxError: For an unknown ``count_rule``, or clustering windows shorter than the
                labelling windows.
        """
        from trax.errors import TraxError

        options = cls(**settings)
        if options.count_rule not in COUNT_RULES:
            raise TraxError("diarize.embedded.count_rule",
                            f"unknown rule {options.count_rule!r}; choose one of {COUNT_RULES}")
        if options.cluster_window_s is not None and options.cluster_window_s < options.window_s:
            raise TraxError("diarize.embedded.cluster_window_s",
                            f"{options.cluster_window_s} is shorter than window_s ({options.window_s}); "
                            "clustering windows must be at least as long as the labelling windows (or null)")
        return options


@dataclass
class EmbeddedModels:
    """The loaded models of the embedded backend (cached by the model server)."""

    encoder: Any
    vad: Any
    ids: dict[str, Any] = field(default_factory=dict)
    overlap: Any = None


def load_embedded_models() -> EmbeddedModels:
    """Load resemblyzer's voice encoder (numpy, :mod:`trax.diarization.encoder`) and Silero VAD v6
    from faster-whisper, importing neither torch nor librosa."""
    from trax.diarization.encoder import load_voice_encoder, pretrained_sha256
    from trax.io.provenance import sha256_file

    faster_whisper = import_faster_whisper()  # without the torch that ctranslate2's converters import
    from faster_whisper.vad import get_vad_model

    encoder = load_voice_encoder()
    vad_path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    ids = {
        # The id names the weights, not the runtime: the numpy encoder gives resemblyzer's
        # embeddings (cosine >= 0.999), so profiles enrolled with either stay comparable.
        "embedding": {"id": f"resemblyzer=={metadata.version('resemblyzer')}", "weights_sha256": pretrained_sha256()},
        "vad": {"id": f"silero_vad_v6 (faster-whisper=={metadata.version('faster-whisper')})",
                "weights_sha256": sha256_file(vad_path)},
    }
    from trax.diarization.overlap import load_overlap_detector

    models = EmbeddedModels(encoder=encoder, vad=get_vad_model(), ids=ids, overlap=load_overlap_detector())
    _warm_up(models)
    return models


def _warm_up(models: EmbeddedModels) -> None:
    """Run every step once on a short synthetic signal, so the native code that scipy and
    onnxruntime load lazily on first use loads with the model, not inside the first request."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage  # noqa: F401

    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    speech_regions(noise, EmbeddedOptions())
    mel = _mel_frames(noise)
    embed_windows(models, mel, window=50, hop=25)


def speech_regions(audio: np.ndarray, options: EmbeddedOptions) -> list[tuple[int, int]]:
    """Silero VAD speech regions as (start, end) sample indices."""
    import_faster_whisper()
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad_options = VadOptions(
        threshold=options.vad_threshold,
        min_silence_duration_ms=options.vad_min_silence_ms,
        speech_pad_ms=options.vad_pad_ms,
        min_speech_duration_ms=0,
    )
    return [(s["start"], s["end"]) for s in get_speech_timestamps(audio, vad_options)]


def level_speech(speech: np.ndarray, dbfs: float | None) -> np.ndarray:
    """Scale ``speech`` to an RMS of ``dbfs`` (None: unchanged). resemblyzer's input is a mel
    power spectrogram, so its embeddings follow the recording's gain; levelling the speech of each
    piece (as resemblyzer's own ``preprocess_wav`` does, at -30 dBFS) makes a voice recorded loud
    and the same voice recorded soft comparable — what enrollment and identification need.
    (resemblyzer's own target is -30 dBFS; -20 scored better in ``bench/diarize.py --loo``.)"""
    import numpy as np

    if dbfs is None or not len(speech):
        return speech
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    if rms < 1e-6:
        return speech
    return (speech * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def _mel_frames(audio: np.ndarray) -> np.ndarray:
    """resemblyzer's mel power input (frames x 40) for the whole signal."""
    from trax.diarization.encoder import mel_spectrogram

    return mel_spectrogram(audio)


def speech_mel(samples: np.ndarray, options: EmbeddedOptions) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The speech of one piece as the encoder sees it: VAD regions snapped to the 10 ms mel grid,
    the sample index of each speech frame, and the mel frames of the regions' concatenated,
    levelled speech (as many rows as frame times).

    Returns:
        (regions, frame_times, mel); no regions gives empty arrays.
    """
    import numpy as np

    regions = speech_regions(samples, options)
    # Snap regions to the 10 ms mel grid so frames map back to exact times.
    regions = [(s // FRAME * FRAME, min(-(-e // FRAME) * FRAME, len(samples))) for s, e in regions]
    regions = [(s, e) for s, e in regions if e - s >= FRAME]
    if not regions:
        return [], np.zeros(0, dtype=np.int64), np.zeros((0, 40), dtype=np.float32)
    speech = level_speech(np.concatenate([samples[s:e] for s, e in regions]), options.speech_dbfs)
    frame_times = np.concatenate([np.arange(s, e, FRAME) for s, e in regions])
    mel = _mel_frames(speech)
    frames = min(len(mel), len(frame_times))
    return regions, frame_times[:frames], mel[:frames]


#: Windows run through the LSTM at a time. Its activations grow with the batch, so one batch per
#: 5-minute piece made the peak follow how much speech a piece holds (+90 MB between a 10-minute
#: and a 40-minute recording); 128 windows keep it flat at no measurable cost in speed.
EMBED_BLOCK_WINDOWS = 128


def embed_windows(models: EmbeddedModels, mel: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Embed windows of ``window`` mel frames every ``hop`` frames.

    Returns:
        (starts, embeddings): window start frames and their L2-normalised embeddings. A signal
        shorter than one window gives a single window over all of it.
    """
    import numpy as np

    n = len(mel)
    if n <= window:
        starts = np.array([0])
        window = n
    else:
        starts = np.arange(0, n - window + 1, hop)
        if starts[-1] + window < n:  # cover the tail
            starts = np.append(starts, n - window)
    blocks = []
    for lo in range(0, len(starts), EMBED_BLOCK_WINDOWS):
        batch = np.stack([mel[s : s + window] for s in starts[lo : lo + EMBED_BLOCK_WINDOWS]])
        blocks.append(models.encoder(batch.astype(np.float32)))
    embeddings = np.concatenate(blocks).astype(np.float64)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return starts, embeddings


def cluster(
    embeddings: np.ndarray,
    weights: np.ndarray,
    options: EmbeddedOptions,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster window embeddings; return (labels 0..k-1, facts about the choice).

    Args:
        embeddings: L2-normalised embeddings, one row per window.
        weights: Seconds of new speech each window contributes (for ``min_speaker_s``).
        options: Backend settings.
        num_speakers: Exact count (overrides everything), or None.
        min_speakers: Lower bound on the automatic count, or None.
        max_speakers: Upper bound on the automatic count, or None.
    """
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    count = len(embeddings)
    if count == 1:
        return np.zeros(1, dtype=int), {"num_speakers_auto": 1, "reason": "single window"}
    if count <= options.cluster_chunk_windows:
        tree = linkage(embeddings, method="average", metric="cosine")
        groups = None
        leaves = count
    else:
        groups, means, sizes = _chunk_clusters(embeddings, options)
        tree = average_linkage_of_groups(means, sizes)
        leaves = len(sizes)

    def cut(t: float, criterion: str) -> np.ndarray:
        labels = fcluster(tree, t=t, criterion=criterion)
        return _compact(labels if groups is None else labels[groups])

    if num_speakers is not None:
        return cut(min(num_speakers, leaves), "maxclust"), {"reason": "num_speakers"}

    def merged(labels: np.ndarray) -> np.ndarray:
        return _merge_small(embeddings, labels, weights, options.min_speaker_s, options.distinct_speaker_s,
                            options.distinct_speaker_distance)

    if options.count_rule == "silhouette":
        labels, score = _best_cut(lambda k: merged(cut(k, "maxclust")),
                                  range(max(2, min_speakers or 2), min(max_speakers or MAX_AUTO_SPEAKERS,
                                                                       MAX_AUTO_SPEAKERS, leaves) + 1),
                                  lambda labels: silhouette(embeddings, labels))
        if labels is None or (score < options.silhouette_min and (min_speakers or 1) <= 1):
            labels = np.zeros(count, dtype=int)
        facts: dict[str, Any] = {"num_speakers_auto": int(labels.max()) + 1, "reason": "silhouette",
                                 "silhouette": round(float(score), 4)}
    elif options.count_rule == "spread":
        high = min(max_speakers or MAX_AUTO_SPEAKERS, MAX_AUTO_SPEAKERS, leaves)
        labels, score = _best_cut(lambda k: merged(cut(k, "maxclust")) if k > 1 else np.zeros(count, dtype=int),
                                  range(min(min_speakers or 1, high), high + 1),
                                  lambda labels: -spread_cost(embeddings, labels, weights, options.count_penalty))
        facts = {"num_speakers_auto": int(labels.max()) + 1, "reason": "spread"}
    else:
        labels = merged(cut(options.cluster_threshold, "distance"))
        facts = {"num_speakers_auto": int(labels.max()) + 1, "reason": "cluster_threshold"}
    if options.split_distance is not None or options.merge_distance is not None:
        facts["num_speakers_first_pass"] = int(labels.max()) + 1
        if options.split_distance is not None:
            labels = split_clusters(embeddings, labels, weights, options.split_distance, options.split_min_s,
                                    max_speakers or MAX_AUTO_SPEAKERS)
        if options.merge_distance is not None:
            labels = merge_close_clusters(embeddings, labels, options.merge_distance, min_speakers or 1)
        facts["num_speakers_auto"] = int(labels.max()) + 1
    auto = int(labels.max()) + 1
    if groups is not None:
        facts["cluster_chunks"] = -(-count // options.cluster_chunk_windows)
    low = min_speakers or 1
    high = max_speakers or leaves
    if auto < low or auto > high:
        labels = cut(min(max(auto, low), high, leaves), "maxclust")
        facts["reason"] = "min_speakers" if auto < low else "max_speakers"
    return labels, facts


#: Most speakers the silhouette rule considers (more needs ``max_speakers`` or ``num_speakers``).
MAX_AUTO_SPEAKERS = 12
#: Windows the silhouette is computed on at most (an even subsample beyond): n² distances.
SILHOUETTE_WINDOWS = 2000


def silhouette(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of unit-vector ``embeddings`` under cosine distance (singletons count 0).

    For window i, a = mean distance to the other windows of its cluster, b = the lowest mean
    distance to another cluster, s = (b - a) / max(a, b). Scale-free: it compares how far apart
    the clusters are with how spread each one is, so the same value suits voices that are alike
    (one meeting room, one microphone) and voices that are not."""
    import numpy as np

    count = int(labels.max()) + 1
    if count < 2:
        return 0.0
    step = -(-len(labels) // SILHOUETTE_WINDOWS)
    x = np.asarray(embeddings[::step], dtype=np.float64)
    lab = labels[::step]
    onehot = np.zeros((len(lab), count))
    onehot[np.arange(len(lab)), lab] = 1.0
    sizes = onehot.sum(axis=0)
    # Sum of distances to each cluster: sum_j (1 - x_i . x_j) = n_c - x_i . sum_c.
    sums = sizes[None, :] - x @ (onehot.T @ x).T
    own = sizes[lab]
    a = sums[np.arange(len(lab)), lab] / np.maximum(own - 1, 1)
    other = np.where(onehot > 0, np.inf, sums / np.maximum(sizes, 1)[None, :])
    other[:, sizes == 0] = np.inf
    b = other.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(np.mean(s[np.isfinite(s)])) if np.isfinite(s).any() else 0.0


def spread_cost(embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray, penalty: float) -> float:
    """BIC-like cost of a labelling (``count_rule: spread``): ``n log(W / n) + penalty k log n``.

    W is the weighted spread of the ``n`` windows around their speakers' centroids (sum of
    ``weight * (1 - cosine)``), k the number of speakers. Splitting a speaker always lowers W; the
    split pays only when it lowers W by a large enough *factor*, so the rule does not depend on how
    far apart two voices are in absolute terms (the same room and microphone bring voices closer),
    only on how much tighter the speakers become."""
    import numpy as np

    centroids = _centroids(embeddings, labels)
    spread = float(np.sum(weights * (1.0 - np.einsum("ij,ij->i", embeddings, centroids[labels]))))
    n = len(labels)
    return n * float(np.log(max(spread / max(float(weights.sum()), 1e-12), 1e-12))) + \
        penalty * (int(labels.max()) + 1) * float(np.log(max(n, 2)))


def _best_cut(labelling, counts: range, score) -> tuple[np.ndarray | None, float]:
    """The labelling with the highest ``score`` among ``labelling(k)`` for k in ``counts`` (the
    dendrogram cut into k clusters, small clusters merged); ties go to fewer speakers.
    Returns (labels, score), or (None, 0) when ``counts`` is empty."""
    best, best_score, seen = None, float("-inf"), set()
    for k in counts:
        labels = labelling(k)
        key = labels.tobytes()
        if key in seen:
            continue
        seen.add(key)
        value = score(labels)
        if value > best_score + 1e-9:
            best, best_score = labels, value
    return best, (best_score if best is not None else 0.0)


#: Spherical 2-means iterations of :func:`split_clusters` (it settles in a handful).
SPLIT_ITERATIONS = 20


def _two_means(x: np.ndarray) -> np.ndarray:
    """Spherical 2-means of unit rows ``x``: 0/1 per row. Deterministic start: the row farthest
    from the mean direction, and the row farthest from that one."""
    import numpy as np

    mean = _unit(x.sum(axis=0, keepdims=True))[0]
    a = x[int(np.argmin(x @ mean))]
    b = x[int(np.argmin(x @ a))]
    centres = np.stack([a, b])
    assign = np.zeros(len(x), dtype=int)
    for step in range(SPLIT_ITERATIONS):
        new = np.argmax(x @ centres.T, axis=1)
        if step > 0 and (new == assign).all():
            break
        assign = new
        if assign.min() == assign.max():
            break
        centres = _unit(np.stack([x[assign == 0].sum(axis=0), x[assign == 1].sum(axis=0)]))
    return assign


def split_clusters(embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray, distance: float,
                   min_s: float, max_count: int) -> np.ndarray:
    """Second pass: split clusters that hold two voices (``EmbeddedOptions.split_distance``).

    Each cluster with at least ``2 * min_s`` of windows is cut in two by spherical 2-means; the
    cut is kept when both halves hold at least ``min_s`` and their centroids lie more than
    ``distance`` apart (cosine), and the halves are tried again, up to ``max_count`` clusters.
    """
    import numpy as np

    labels = labels.copy()
    queue = list(range(int(labels.max()) + 1))
    count = len(queue)
    while queue and count < max_count:
        k = queue.pop(0)
        members = np.flatnonzero(labels == k)
        if weights[members].sum() < 2 * min_s or len(members) < 4:
            continue
        x = np.asarray(embeddings[members], dtype=np.float64)
        halves = _two_means(x)
        if min(weights[members[halves == 0]].sum(), weights[members[halves == 1]].sum()) < min_s:
            continue
        centres = _unit(np.stack([x[halves == 0].sum(axis=0), x[halves == 1].sum(axis=0)]))
        if 1.0 - float(centres[0] @ centres[1]) <= distance:
            continue
        labels[members[halves == 1]] = count
        queue += [k, count]
        count += 1
    return _compact(labels)


def merge_close_clusters(embeddings: np.ndarray, labels: np.ndarray, distance: float, min_count: int) -> np.ndarray:
    """Second pass: merge the two clusters with the closest centroids while they lie closer than
    ``distance`` (cosine) and more than ``min_count`` clusters remain
    (``EmbeddedOptions.merge_distance``). Ties go to the pair that appears first."""
    import numpy as np

    sums = _cluster_sums(embeddings, labels)
    count = len(sums)
    target = np.arange(count)
    alive = np.ones(count, dtype=bool)
    while alive.sum() > max(min_count, 1):
        units = _unit(sums)
        gap = 1.0 - units @ units.T
        gap[~alive, :] = np.inf
        gap[:, ~alive] = np.inf
        np.fill_diagonal(gap, np.inf)
        i, j = np.unravel_index(int(np.argmin(gap)), gap.shape)
        if gap[i, j] >= distance:
            break
        i, j = min(i, j), max(i, j)
        sums[i] += sums[j]
        sums[j] = 0.0
        alive[j] = False
        target[target == j] = i
    return _compact(target[labels])


def _chunk_clusters(embeddings: np.ndarray, options: EmbeddedOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First stage of chunked clustering: average linkage within consecutive chunks of
    ``cluster_chunk_windows`` windows, cut at ``cluster_threshold``.

    Returns:
        (group of each window, mean embedding of each group (not re-normalised), group sizes).
    """
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    chunk = options.cluster_chunk_windows
    groups = np.empty(len(embeddings), dtype=np.int64)
    sums: list[np.ndarray] = []
    sizes: list[int] = []
    for begin in range(0, len(embeddings), chunk):
        part = np.asarray(embeddings[begin : begin + chunk], dtype=np.float64)
        if len(part) == 1:
            local = np.zeros(1, dtype=int)
        else:
            local = _compact(fcluster(linkage(part, method="average", metric="cosine"),
                                      t=options.cluster_threshold, criterion="distance"))
        for k in range(int(local.max()) + 1):
            members = local == k
            groups[begin : begin + chunk][members] = len(sizes)
            sums.append(part[members].sum(axis=0))
            sizes.append(int(members.sum()))
    size_array = np.array(sizes, dtype=np.float64)
    return groups, np.stack(sums) / size_array[:, None], size_array


def average_linkage_of_groups(means: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Average linkage (UPGMA) of groups of unit vectors under cosine distance, in scipy's
    linkage-matrix format (leaves = groups).

    For unit vectors the mean cosine distance between two sets is ``1 - mean_a · mean_b``, so the
    groups' means and sizes are all UPGMA needs: the result is exactly the dendrogram that
    average linkage over all windows would build above these groups, had it formed them first.
    Memory is one groups × groups matrix (a few hundred groups per hour of speech). Ties are broken by
    index, so the tree is deterministic.
    """
    import numpy as np

    count = len(sizes)
    distance = 1.0 - means @ means.T
    np.fill_diagonal(distance, np.inf)
    size = sizes.astype(np.float64).copy()
    leaves = np.ones(count)  # scipy's 4th column counts leaves (groups), not windows
    ids = np.arange(count)
    active = np.ones(count, dtype=bool)
    row_min = distance.min(axis=1)
    row_arg = distance.argmin(axis=1)
    tree = np.zeros((count - 1, 4))
    for step in range(count - 1):
        i = int(np.argmin(np.where(active, row_min, np.inf)))
        j = int(row_arg[i])
        i, j = min(i, j), max(i, j)
        tree[step] = (min(ids[i], ids[j]), max(ids[i], ids[j]), max(float(distance[i, j]), 0.0), leaves[i] + leaves[j])
        merged = (size[i] * distance[i] + size[j] * distance[j]) / (size[i] + size[j])
        merged[~active] = np.inf
        merged[i] = merged[j] = np.inf
        distance[i, :] = merged
        distance[:, i] = merged
        distance[j, :] = np.inf
        distance[:, j] = np.inf
        active[j] = False
        row_min[j] = np.inf
        size[i] += size[j]
        leaves[i] += leaves[j]
        ids[i] = count + step
        # Rows whose nearest neighbour was i or j look again; the others only compare with i.
        stale = active & ((row_arg == i) | (row_arg == j))
        stale[i] = True
        for r in np.flatnonzero(stale):
            row_arg[r] = int(np.argmin(distance[r]))
            row_min[r] = distance[r, row_arg[r]]
        closer = active & ~stale & (merged < row_min)
        row_min[closer] = merged[closer]
        row_arg[closer] = i
    return tree


def _compact(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in order of first appearance."""
    import numpy as np

    values, first, inverse = np.unique(np.asarray(labels), return_index=True, return_inverse=True)
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(values))
    return rank[inverse.reshape(-1)]


def _cluster_sums(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sum of the embeddings of each label (labels 0..k-1), in float64, one pass."""
    import numpy as np

    sums = np.zeros((int(labels.max()) + 1, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return sums


def _unit(rows: np.ndarray) -> np.ndarray:
    import numpy as np

    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """L2-normalised mean embedding of each label."""
    return _unit(_cluster_sums(embeddings, labels))


def _merge_small(embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray, min_s: float,
                 distinct_s: float = 0.0, distinct_distance: float | None = None) -> np.ndarray:
    """Merge clusters with less than ``min_s`` seconds into the nearest larger cluster.

    Repeatedly takes the smallest cluster (ties: the one that appears first) and merges it into
    the cluster with the most similar centroid (ties: the one that appears first). Centroids and
    sizes are updated per merge, so a merge costs one clusters x 256 product, not a pass over all
    windows: hours of audio can leave hundreds of small clusters.

    A small cluster with at least ``distinct_s`` seconds whose average cosine distance to that
    nearest cluster (mean over all window pairs: ``1 - sum_a . sum_b / (n_a n_b)``) exceeds
    ``distinct_distance`` is kept as it is (None: never kept).
    """
    import numpy as np

    count = int(labels.max()) + 1
    sums = _cluster_sums(embeddings, labels)
    units = _unit(sums)
    sizes = np.bincount(labels, weights=weights, minlength=count).astype(np.float64)
    windows = np.bincount(labels, minlength=count).astype(np.float64)
    first = np.full(count, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    target = np.arange(count)  # where each original cluster ended up
    kept = np.zeros(count, dtype=bool)  # small but distinct: not merged
    alive = count
    while alive > 1:
        candidates = np.where(kept, np.inf, sizes)
        smallest_size = candidates.min()
        if smallest_size >= min_s:
            break
        tied = np.flatnonzero(candidates == smallest_size)
        smallest = int(tied[np.argmin(first[tied])])
        similarity = units @ units[smallest]
        similarity[~np.isfinite(sizes)] = -np.inf
        similarity[smallest] = -np.inf
        tied = np.flatnonzero(similarity == similarity.max())
        nearest = int(tied[np.argmin(first[tied])])
        if distinct_distance is not None and sizes[smallest] >= distinct_s:
            mean_similarity = float(sums[nearest] @ sums[smallest]) / (windows[nearest] * windows[smallest])
            if 1.0 - mean_similarity > distinct_distance:
                kept[smallest] = True
                continue
        sums[nearest] += sums[smallest]
        units[nearest] = _unit(sums[nearest : nearest + 1])[0]
        sizes[nearest] += sizes[smallest]
        windows[nearest] += windows[smallest]
        first[nearest] = min(first[nearest], first[smallest])
        sizes[smallest] = np.inf  # gone
        target[target == smallest] = nearest
        alive -= 1
    return _compact(target[labels])


def viterbi(scores: np.ndarray, penalty: float) -> np.ndarray:
    """Best label path through ``scores`` (frames x labels) with ``penalty`` per label change."""
    import numpy as np

    frames, states = scores.shape
    if states == 1 or penalty <= 0:
        return np.argmax(scores, axis=1)
    back = np.zeros((frames, states), dtype=np.int64)
    total = scores[0].copy()
    for t in range(1, frames):
        best_prev = int(np.argmax(total))
        stay = total
        switch = total[best_prev] - penalty
        back[t] = np.where(stay >= switch, np.arange(states), best_prev)
        total = np.maximum(stay, switch) + scores[t]
    path = np.empty(frames, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(frames - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


@dataclass
class SpeechEmbeddings:
    """Window embeddings of a recording's speech (what clustering works on).

    Attributes:
        frame_times: Sample index of each 10 ms speech frame (speech regions concatenated).
        starts: First frame of each window (indices into ``frame_times``), ascending.
        ends: One past the last frame of each window, ascending.
        embeddings: L2-normalised embeddings, one row per window (float32).
        regions: Number of VAD speech regions.
        cluster_starts: With ``cluster_window_s``: first frame of each clustering window (else None).
        cluster_ends: One past the last frame of each clustering window.
        cluster_embeddings: Their embeddings (float32).
        overlap: With ``overlap_detector``: the detector's first, acoustic P(overlapped speech) per
            speech frame (float32; else None).
    """

    frame_times: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray
    regions: int
    cluster_starts: np.ndarray | None = None
    cluster_ends: np.ndarray | None = None
    cluster_embeddings: np.ndarray | None = None
    overlap: np.ndarray | None = None


def embed_speech(models: EmbeddedModels, audio: np.ndarray | Iterable[AudioPiece], options: EmbeddedOptions,
                 total_s: float | None = None) -> SpeechEmbeddings | None:
    """VAD, then window embeddings over the concatenated speech, piece by piece; None when there
    is no speech.

    Args:
        models: Loaded models.
        audio: 16 kHz float32 samples, or the pieces of a long recording
            (:func:`trax.io.media.audio_pieces`); each piece gets its own VAD pass and windows, so a
            window never spans two pieces.
        options: Backend settings.
        total_s: Length of the recording, for progress reports (none when None).
    """
    import numpy as np

    from trax import progress
    from trax.io.media import AudioPiece

    pieces = [AudioPiece(0, audio)] if isinstance(audio, np.ndarray) else audio
    window = max(1, round(options.window_s * SAMPLE_RATE / FRAME))
    hop = max(1, round(options.hop_s * SAMPLE_RATE / FRAME))
    long = options.cluster_window_s is not None
    if long:
        long_window = max(1, round(options.cluster_window_s * SAMPLE_RATE / FRAME))
        long_hop = max(1, round((options.cluster_hop_s or options.hop_s) * SAMPLE_RATE / FRAME))
    times: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    long_starts: list[np.ndarray] = []
    long_ends: list[np.ndarray] = []
    long_embeddings: list[np.ndarray] = []
    overlap: list[np.ndarray] = []
    frames_before = 0
    regions_total = 0
    for piece in pieces:
        samples = piece.samples
        regions, frame_times, mel = speech_mel(samples, options)
        if regions:
            frame_times = frame_times + piece.start
            frames = len(frame_times)
            local_starts, local_embeddings = embed_windows(models, mel, window, hop)
            times.append(frame_times)
            starts.append(local_starts + frames_before)
            ends.append(local_starts + frames_before + min(window, frames))
            embeddings.append(local_embeddings.astype(np.float32))
            if long:
                local_starts, local_embeddings = embed_windows(models, mel, long_window, long_hop)
                long_starts.append(local_starts + frames_before)
                long_ends.append(local_starts + frames_before + min(long_window, frames))
                long_embeddings.append(local_embeddings.astype(np.float32))
            if options.overlap_detector:
                overlap.append(models.overlap.acoustic(mel))
            frames_before += frames
            regions_total += len(regions)
        if total_s:
            progress.report("diarize", min(total_s, (piece.start + len(samples)) / SAMPLE_RATE), total_s)
    if not times:
        return None
    # Joined one array at a time, each list dropped once joined: a 4-hour recording's pieces
    # (~40 MB) are never held twice over.
    joined = []
    for parts in (times, starts, ends, embeddings):
        joined.append(np.concatenate(parts))
        parts.clear()
    clustering = [np.concatenate(parts) if long else None for parts in (long_starts, long_ends, long_embeddings)]
    return SpeechEmbeddings(*joined, regions_total, *clustering,
                            overlap=np.concatenate(overlap) if options.overlap_detector else None)


#: Frames scored and smoothed at a time by :func:`label_frames` (10 minutes of speech): the
#: frames x speakers score matrix of a 4-hour file would be ~100 MB at once.
LABEL_BLOCK_FRAMES = 60_000


def _frame_scores(speech: SpeechEmbeddings, similarity: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Scores of frames ``[lo, hi)``: mean similarity of the windows covering each frame to each
    centroid (0 for a frame no window covers)."""
    import numpy as np

    sums = np.zeros((hi - lo, similarity.shape[1]))
    counts = np.zeros(hi - lo)
    first = int(np.searchsorted(speech.ends, lo, side="right"))
    last = int(np.searchsorted(speech.starts, hi, side="left"))
    for start, end, row in zip(speech.starts[first:last], speech.ends[first:last], similarity[first:last]):
        a, b = max(int(start), lo) - lo, min(int(end), hi) - lo
        sums[a:b] += row
        counts[a:b] += 1
    return sums / np.maximum(counts, 1)[:, None]


def label_frames(
    speech: SpeechEmbeddings,
    options: EmbeddedOptions,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    overlap_detector: Any = None,
) -> tuple[list[Turn], dict[str, Any]]:
    """Cluster the windows, label every speech frame, and return (turns, details).

    ``overlap_detector``: the loaded :class:`trax.diarization.overlap.OverlapDetector`, used when
    ``options.overlap_detector`` is on and ``speech`` carries its acoustic probabilities."""
    import numpy as np

    starts = speech.starts
    # Exact clustering works in float64 (a copy of at most cluster_chunk_windows rows); chunked
    # clustering converts chunk by chunk, so a long recording is never copied whole.
    embeddings = (speech.embeddings.astype(np.float64) if len(starts) <= options.cluster_chunk_windows
                  else speech.embeddings)
    frames = len(speech.frame_times)
    labels = None
    if speech.cluster_embeddings is not None and options.cluster_window_s is not None:
        labels, facts = _cluster_long_windows(speech, options, num_speakers, min_speakers, max_speakers)
        if labels.max() + 1 < (num_speakers or min_speakers or 1):
            labels = None  # a requested speaker got no short window: cluster those instead
    if labels is None:
        weights = np.full(len(starts), min(options.hop_s, options.window_s))
        labels, facts = cluster(embeddings, weights, options, num_speakers, min_speakers, max_speakers)
    centroids = _centroids(embeddings, labels)

    # Frame scores: mean similarity of the covering windows to each centroid. The Viterbi penalty
    # also applies across pauses, which keeps a speaker through short ones. Scored block by block.
    blocks = [(lo, min(lo + LABEL_BLOCK_FRAMES, frames)) for lo in range(0, frames, LABEL_BLOCK_FRAMES)]

    def labelling(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        similarity = embeddings @ centroids.T.astype(embeddings.dtype)
        return similarity, viterbi_blocks((_frame_scores(speech, similarity, lo, hi) for lo, hi in blocks), frames,
                                          len(centroids), options.switch_penalty)

    similarity, path = labelling(centroids)
    required = num_speakers or min_speakers or 1
    for _ in range(options.resegment_iterations if len(centroids) > 1 else 0):
        owners = _pure_owner(speech, path)
        sums = np.zeros_like(centroids, dtype=np.float64)
        for lo in range(0, len(owners), SUM_BLOCK_WINDOWS):  # no copy of a long recording's windows
            block = owners[lo : lo + SUM_BLOCK_WINDOWS]
            np.add.at(sums, block[block >= 0], embeddings[lo : lo + SUM_BLOCK_WINDOWS][block >= 0])
        seconds = np.bincount(path, minlength=len(centroids)) * FRAME / SAMPLE_RATE
        windows = np.bincount(owners[owners >= 0], minlength=len(centroids)).astype(np.float64)
        keep = windows > 0
        if num_speakers is None and options.resegment_min_s > 0:
            for k in np.argsort(seconds, kind="stable"):  # least speech first
                if keep.sum() <= required or seconds[k] >= options.resegment_min_s:
                    continue
                if keep[k] and _distinct(sums, windows, keep, k, seconds[k], options):
                    continue
                keep[k] = False
        keep_ids = np.flatnonzero(keep)
        if len(keep_ids) < required:
            break  # a requested speaker would be lost: keep the first labelling
        new_centroids = _unit(sums[keep_ids])
        similarity, new_path = labelling(new_centroids)
        centroids, path = new_centroids, new_path
        # Window labels follow the frames (for the fallbacks and signals below).
        labels = path[speech.starts + (speech.ends - speech.starts) // 2]
        facts["num_speakers_auto" if num_speakers is None else "resegmented_speakers"] = len(keep_ids)
    missing = [k for k in range(len(centroids)) if k not in set(np.unique(path).tolist())]
    if missing and required > len(centroids) - len(missing):
        # A requested speaker the smoothing dropped keeps the centre of each of its windows.
        hop = max(1, round(options.hop_s * SAMPLE_RATE / FRAME))
        for k in missing:
            for start, end in zip(starts[labels == k], speech.ends[labels == k]):
                centre = start + (end - start) // 2
                path[max(0, centre - hop // 2) : centre + (hop + 1) // 2] = k
    turns = _runs(speech.frame_times, path)
    voices = speaker_embeddings(speech, embeddings, labels, path)
    if options.overlap_detector and speech.overlap is not None and overlap_detector is not None and len(voices) > 1:
        turns += _overlap_turns(speech, embeddings, voices, path, overlap_detector, options.overlap_threshold, facts)
    if options.overlap_margin > 0 and len(centroids) > 1:
        for lo, hi in blocks:
            scores = _frame_scores(speech, similarity, lo, hi)
            rows = np.arange(hi - lo)
            chosen = scores[rows, path[lo:hi]]
            scores[rows, path[lo:hi]] = -np.inf
            runner_up = np.argmax(scores, axis=1)
            close = chosen - scores[rows, runner_up] < options.overlap_margin
            turns += _runs(speech.frame_times[lo:hi], np.where(close, runner_up, -1))
    from trax.quality.estimates import diarization_signals

    details = {"speech_regions": speech.regions, "windows": int(len(starts)), **facts,
               "confidence_signals": diarization_signals(similarity, labels, options.cluster_threshold)}
    details[SPEAKER_EMBEDDINGS] = voices
    return turns, details


def top_two_scores(speech: SpeechEmbeddings, embeddings: np.ndarray, voices: np.ndarray) -> np.ndarray:
    """Per speech frame, the best and second-best score against ``voices`` (unit rows, at least
    two): the mean similarity of the windows covering the frame (frames x 2, float32; block by
    block, so the frames x speakers matrix of a long recording is never held whole)."""
    import numpy as np

    frames = len(speech.frame_times)
    similarity = embeddings @ voices.T.astype(embeddings.dtype)
    result = np.empty((frames, 2), dtype=np.float32)
    for lo in range(0, frames, LABEL_BLOCK_FRAMES):
        hi = min(lo + LABEL_BLOCK_FRAMES, frames)
        best = np.sort(_frame_scores(speech, similarity, lo, hi), axis=1)[:, -2:]
        result[lo:hi] = best[:, ::-1]
    return result


def _overlap_turns(speech: SpeechEmbeddings, embeddings: np.ndarray, voices: dict[str, np.ndarray],
                   path: np.ndarray, detector: Any, threshold: float, facts: dict[str, Any]) -> list[Turn]:
    """Second-speaker turns on the frames the overlap detector flags: each gets the nearest other
    speaker in time (``EmbeddedOptions.overlap_detector``); records the seconds flagged."""
    import numpy as np

    from trax.diarization.overlap import nearest_other_speaker, overlap_frames

    top_two = top_two_scores(speech, embeddings, np.stack(list(voices.values())))
    flags = overlap_frames(detector(speech.overlap, top_two, path), threshold)
    facts["overlap_detected_s"] = round(float(flags.sum()) * FRAME / SAMPLE_RATE, 2)
    return _runs(speech.frame_times, np.where(flags, nearest_other_speaker(path), -1))


def _cluster_long_windows(speech: SpeechEmbeddings, options: EmbeddedOptions, num_speakers: int | None,
                          min_speakers: int | None, max_speakers: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster the ``cluster_window_s`` windows and give each labelling window the cluster of the
    clustering window whose centre is nearest to its own (``EmbeddedOptions.cluster_window_s``)."""
    import numpy as np

    from trax.diarization.overlap import nearest_sorted

    long = speech.cluster_embeddings
    if len(long) <= options.cluster_chunk_windows:
        long = long.astype(np.float64)
    hop = options.cluster_hop_s or options.hop_s
    weights = np.full(len(long), min(hop, options.cluster_window_s))
    long_labels, facts = cluster(long, weights, options, num_speakers, min_speakers, max_speakers)
    centres = (speech.cluster_starts + speech.cluster_ends) / 2
    wanted = (speech.starts + speech.ends) / 2
    labels = _compact(long_labels[nearest_sorted(centres, wanted)])
    facts["cluster_windows"] = int(len(long))
    return labels, facts


def _distinct(sums: np.ndarray, windows: np.ndarray, keep: np.ndarray, k: int, seconds: float,
              options: EmbeddedOptions) -> bool:
    """Whether speaker ``k`` is a distinct voice that resegmentation keeps however little it
    speaks: the rule :func:`_merge_small` applies to small clusters (``distinct_speaker_s`` of
    speech and a mean cosine distance above ``distinct_speaker_distance`` to the nearest other
    kept speaker, over their windows ``sums``/``windows``)."""
    import numpy as np

    others = keep.copy()
    others[k] = False
    if options.distinct_speaker_distance is None or seconds < options.distinct_speaker_s or not others.any():
        return False
    mean_similarity = (sums[others] @ sums[k]) / (windows[others] * windows[k])
    return 1.0 - float(mean_similarity.max()) > options.distinct_speaker_distance


#: Windows summed at a time when resegmentation re-estimates centroids (a 4-hour recording
#: has ~29 000 windows: a float64 copy of them all would be ~60 MB).
SUM_BLOCK_WINDOWS = 4096


def _pure_owner(speech: SpeechEmbeddings, path: np.ndarray) -> np.ndarray:
    """The label of each window whose frames all carry one label, -1 for the others."""
    import numpy as np

    changes = np.concatenate([[0], np.cumsum(path[1:] != path[:-1])])
    pure = changes[speech.ends - 1] == changes[speech.starts]
    return np.where(pure, path[speech.starts], -1)


#: Key of the per-speaker embeddings in a backend's details; the diarize stage moves them into
#: ``diarization.json``'s speakers (see :class:`trax.io.annotation.Diarization`).
SPEAKER_EMBEDDINGS = "speaker_embeddings"


def speaker_embeddings(speech: SpeechEmbeddings, embeddings: np.ndarray, labels: np.ndarray,
                       path: np.ndarray) -> dict[str, np.ndarray]:
    """One voice embedding per final speaker ``S<k>``: the normalised mean of the windows whose
    frames the final labelling gives to that speaker alone ("pure" windows), so windows that
    straddle a speaker change do not blur a voice; a speaker with no pure window takes the mean
    of the windows clustering gave it."""
    import numpy as np

    result: dict[str, np.ndarray] = {}
    owners = _pure_owner(speech, path)
    for k in sorted(set(path.tolist())):
        members = owners == k
        if not members.any():
            members = labels == k
        if members.any():
            mean = np.asarray(embeddings[members], dtype=np.float64).mean(axis=0)
            result[f"S{k}"] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return result


def viterbi_blocks(blocks: Iterable[np.ndarray], frames: int, states: int, penalty: float) -> np.ndarray:
    """:func:`viterbi` over score blocks (consecutive frames x labels) as one sequence, keeping
    only one bit per frame and label for the way back (a 4-hour recording has ~1.2 M speech
    frames: a byte per label would be ~36 MB at 30 speakers)."""
    import numpy as np

    path = np.empty(frames, dtype=np.int64)
    if states == 1 or penalty <= 0:
        done = 0
        for scores in blocks:
            path[done : done + len(scores)] = np.argmax(scores, axis=1)
            done += len(scores)
        return path
    stay = np.zeros((frames, (states + 7) // 8), dtype=np.uint8)  # bit k of row t: label k stays
    best_prev = np.zeros(frames, dtype=np.int32)
    total = None
    t = 0
    for scores in blocks:
        for row in scores:
            if total is None:
                total = row.copy()
            else:
                best = int(np.argmax(total))
                switch = total[best] - penalty
                stay[t] = np.packbits(total >= switch)
                best_prev[t] = best
                total = np.maximum(total, switch) + row
            t += 1
    path[-1] = int(np.argmax(total))
    for t in range(frames - 1, 0, -1):
        label = path[t]
        path[t - 1] = label if stay[t, label >> 3] & (0x80 >> (label & 7)) else best_prev[t]
    return path


def _runs(frame_times: np.ndarray, path: np.ndarray) -> list[Turn]:
    """Turns from per-frame labels (-1 = nobody); a gap in ``frame_times`` ends a turn."""
    turns: list[Turn] = []
    begin = 0
    frames = len(path)
    for i in range(1, frames + 1):
        if i == frames or path[i] != path[begin] or frame_times[i] != frame_times[i - 1] + FRAME:
            if path[begin] >= 0:
                start = frame_times[begin] / SAMPLE_RATE
                end = (frame_times[i - 1] + FRAME) / SAMPLE_RATE
                turns.append(Turn(start, end, f"S{int(path[begin])}"))
            begin = i
    return turns


def diarize_embedded(
    models: EmbeddedModels,
    audio: np.ndarray | Iterable[AudioPiece],
    options: EmbeddedOptions,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    total_s: float | None = None,
) -> tuple[list[Turn], dict[str, Any]]:
    """Diarize 16 kHz mono float32 ``audio`` (an array or :func:`trax.io.media.audio_pieces`);
    return (turns, details). Labels are ``S<k>``; ``total_s`` enables progress reports."""
    speech = embed_speech(models, audio, options, total_s)
    if speech is None:
        from trax.quality.estimates import no_speech_signals

        return [], {"speech_regions": 0, "windows": 0, "num_speakers_auto": 0, "reason": "no speech",
                    "confidence_signals": no_speech_signals()}
    return label_frames(speech, options, num_speakers, min_speakers, max_speakers, models.overlap)
