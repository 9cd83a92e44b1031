"""Which language a recording is spoken in, and which model should decode it.

The English fast model (tiny.en) cannot say a recording is not English: it transcribes Spanish as
fluent English with language probability 1.0. Its own decode is the cheap first signal: mean
log-probability is high on English and low on other languages (:func:`reads_as_english`, with
``transcribe_fast.english_min_logprob``).
Only a recording that fails that check pays for identification with the multilingual model, over
several speech windows spread through the recording (not only its first 30 s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trax.io.media import SAMPLE_RATE, read_samples, wav_layout

if TYPE_CHECKING:
    import numpy as np

#: Runner-up languages kept in the transcript beside the detected one.
RUNNER_UPS = 3
#: Seconds of audio read around each probe position of a long recording; VAD picks speech in it.
PROBE_SPAN_S = 90.0
#: A window with less speech than this is used only when there is nothing longer: Whisper's
#: language token is unreliable on a word or two.
MIN_WINDOW_SPEECH_S = 1.0
#: Whisper's window.
WINDOW_S = 30.0


@dataclass
class Detection:
    """How a recording's language was decided (``language_detection`` in ``transcript.fast.json``).

    Attributes:
        language: The language the transcript is decoded in.
        method: ``configured`` (config or sample sheet), ``fast_pass`` (the English model's decode
            scored as English: no identification run), ``identified`` (multilingual model over
            speech windows), or ``no_speech`` (nothing to identify).
        probability: The identified language's probability (mean over windows, weighted by
            speech); None when no identification ran.
        candidates: The top languages with their probabilities, best first (identified only).
        windows: Speech windows scored.
        speech_s: Their speech seconds in total.
        fast_pass_logprob: Mean log-probability of the English model's kept segments
            (duration-weighted); None when it did not run or kept nothing.
        model: Spec of the model that decoded the transcript.
        uncertain: The probability is below ``language_min_probability``: flagged for review.
        reason: One sentence a person can read.
    """

    language: str
    method: str
    model: str
    reason: str
    probability: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    speech_s: float = 0.0
    fast_pass_logprob: float | None = None
    uncertain: bool = False


def mean_logprob(segments: Iterable[Any]) -> float | None:
    """Duration-weighted mean ``avg_logprob`` of decoded segments; None without any."""
    total = weight = 0.0
    for segment in segments:
        length = max(segment.end - segment.start, 0.01)
        total += segment.avg_logprob * length
        weight += length
    return None if weight == 0 else float(total / weight)


def reads_as_english(kept: Sequence[Any], dropped: Sequence[Any], min_logprob: float
                     ) -> tuple[bool, float | None, str]:
    """Whether an English-only model's decode is English, without identification: (verdict, mean
    log-probability of the kept segments, reason).

    Kept segments scoring at least ``min_logprob`` on average are English. A decode whose every
    segment was dropped as non-speech is not trusted either way (a non-English clip often comes out
    as one confident repetition loop: French, Italian and Portuguese clips of benchdata-ml did), so
    it is identified too; a decode of nothing at all has nothing to identify.
    """
    score = mean_logprob(kept)
    if score is None:
        if dropped:
            return False, None, "every decoded segment was dropped as non-speech"
        return True, None, "nothing decoded: no language to identify"
    if score >= min_logprob:
        return True, score, f"English model's mean log-probability {score:.2f} >= {min_logprob:g}"
    return False, score, f"English model's mean log-probability {score:.2f} < {min_logprob:g}"


def speech_windows(wav_path: str, vad_parameters: dict[str, float], count: int) -> list[np.ndarray]:
    """Up to ``count`` windows of at most 30 s of speech, spread through the recording.

    A recording up to ``count`` x :data:`PROBE_SPAN_S` long is read whole; a longer one only in
    ``count`` spans of that length at evenly spaced positions, so memory stays flat on hours of
    audio. Silero VAD keeps the speech of each span, which is cut into 30 s windows; windows are
    then taken evenly from first to last.
    """
    import numpy as np
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    layout = wav_layout(wav_path)
    span = int(PROBE_SPAN_S * SAMPLE_RATE)
    if layout.num_samples <= count * span:
        bounds = [(0, layout.num_samples)]
    else:
        step = layout.num_samples / count
        bounds = [(int(step * (i + 0.5)) - span // 2, int(step * (i + 0.5)) + span // 2) for i in range(count)]
    window = int(WINDOW_S * SAMPLE_RATE)
    windows: list[np.ndarray] = []
    for start, stop in bounds:
        audio = read_samples(layout, max(start, 0), min(stop, layout.num_samples))
        chunks = get_speech_timestamps(audio, VadOptions(**vad_parameters))
        if not chunks:
            continue
        speech = np.concatenate(collect_chunks(audio, chunks)[0])
        windows.extend(speech[i : i + window] for i in range(0, len(speech), window))
    long_enough = [w for w in windows if len(w) >= MIN_WINDOW_SPEECH_S * SAMPLE_RATE]
    windows = long_enough or windows
    if len(windows) > count:
        windows = [windows[round(i * (len(windows) - 1) / (count - 1))] for i in range(count)] if count > 1 \
            else [max(windows, key=len)]
    return windows


def identify(model: Any, windows: Sequence[np.ndarray]) -> tuple[list[tuple[str, float]], float]:
    """Language probabilities of speech ``windows`` with a multilingual faster-whisper model.

    Each window is padded with silence to 30 s (as Whisper was trained, and as the decoder sees a
    short clip), encoded once, and scored on the language tokens; the windows' distributions are
    averaged weighted by their speech seconds.

    Returns:
        All languages with their probability, best first, and the speech seconds scored.
    """
    import numpy as np

    totals: dict[str, float] = {}
    speech = 0.0
    window = int(WINDOW_S * SAMPLE_RATE)
    for audio in windows:
        seconds = len(audio) / SAMPLE_RATE
        padded = np.concatenate([audio, np.zeros(window - len(audio), dtype=audio.dtype)]) if len(audio) < window else audio
        features = model.feature_extractor(padded)[..., : model.feature_extractor.nb_max_frames]
        encoded = model.encode(features)
        for token, probability in model.model.detect_language(encoded)[0]:
            language = token[2:-2]  # "<|de|>"
            totals[language] = totals.get(language, 0.0) + probability * seconds
        speech += seconds
    if speech == 0:
        return [], 0.0
    ranked = sorted(((language, value / speech) for language, value in totals.items()), key=lambda item: (-item[1], item[0]))
    return ranked, speech


def is_multilingual(model: Any) -> bool:
    """Whether a loaded faster-whisper model knows languages other than English."""
    return bool(model.model.is_multilingual)
