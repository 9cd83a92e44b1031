"""Transcription with faster-whisper into typed, byte-stable transcript files."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trax import progress
from trax.errors import TraxError
from trax.io.jsonio import write_json_atomic
from trax.io.languages import check_language, word_separator
from trax.io.media import SAMPLE_RATE, audio_pieces, load_wav, wav_duration  # noqa: F401 - load_wav re-exported
from trax.asr import language
from trax.asr.models import ModelSource, resolve_whisper
from trax.asr.quantized import INT8_COMPUTE_TYPES, int8_copy
from trax.io.provenance import provenance, sha256_file
from trax.process import import_faster_whisper, pin_blas_threads, release_free_memory

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: Decimal places kept in output files: milliseconds for times, 4 digits for probabilities.
#: Rounding keeps files readable and diffs meaningful; it is far below Whisper's 20 ms resolution.
TIME_DIGITS = 3
PROB_DIGITS = 4


@dataclass(frozen=True)
class TranscribeOptions:
    """Decoding settings (the ``transcribe_fast`` config section).

    Attributes:
        model: Model spec, see :mod:`trax.asr.models`.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        compute_type: CTranslate2 compute type; ``int8`` is the robust CPU choice (float32 slowed
            12x when another job held a core).
        cpu_threads: Threads for one decode. Fixed from config (never from ``--cores``) because the
            thread count may change int8 results in the last bits.
        beam_size: Beam width; 5 is Whisper's reference setting. The workflow's fast pass uses 3:
            the same dev corpus WER as 5 with the batched decoder (5.29 %), 2 makes one more
            error, 1 three more; fewer beams also mean fewer copies of the encoder states.
        temperature: Sampling temperature; 0 (greedy/beam, no fallback) keeps output deterministic.
        word_timestamps: Align words with cross-attention (needed by merge and subtitles).
        batch_size: Speech chunks decoded at once by faster-whisper's ``BatchedInferencePipeline``
            (Silero VAD first, speech merged into chunks of at most 30 s, each decoded without
            the previous chunk's text). 0 keeps the sequential 30 s sliding-window decoder. 2, not
            faster-whisper's 8: the same dev WER as 4, 8 and 16, and the encoder's self-attention
            holds batch x heads x 1500² scores at once, so memory grows with the batch: tiny.en on
            the 5-minute bench file peaked at 555 MB with 2 against 785 MB with 4 (and 4 against 8
            on a long recording: 1.17 GB against 1.65 GB), for a few per cent more decode time.
        sequential_max_s: Audio up to this long is decoded by the sequential decoder even when
            ``batch_size`` > 0, provided Silero VAD finds speech in it (without speech it goes to
            the batched path, which decodes nothing). Such audio fits one 30 s window, so there is
            nothing to batch; the sequential decoder sees the clip with its own pauses and predicts
            timestamps, and made 22 instead of 25 errors on the dev set (454 words, every clip
            single-window) for ~0.1 s more per clip (``bench/fast_pass.py``). 0 = always batched.
        vad_filter: Skip non-speech with Silero VAD before decoding (sequential path only; the
            batched path always runs VAD).
        vad_threshold: Silero speech probability above which a 32 ms frame is speech.
        vad_min_silence_ms: Pauses shorter than this stay inside one speech chunk. 160 ms is
            faster-whisper's batched default: chunks end at short pauses, so few words are cut.
        vad_speech_pad_ms: Padding kept around each speech region, so word onsets and tails are
            not clipped.
        max_compression_ratio: A segment whose text gzip-compresses better than this is a
            repetition loop ("I'm going to take a look at how I'm going to…", ratio 16.9 on a
            pure tone) and is dropped. 2.4 is Whisper's own fallback threshold.
        no_speech_threshold: With ``log_prob_threshold``: a segment whose no-speech probability
            is above this *and* whose mean log-probability is below ``log_prob_threshold`` is
            silence the model filled with words, and is dropped (Whisper's rule, 0.6 / -1.0).
        log_prob_threshold: See ``no_speech_threshold``.
        language: Whisper language code, or None to detect (:mod:`trax.asr.language`). A
            configured language skips detection; one that ``model`` cannot decode (not English
            with an English-only model) goes to ``multilingual_model``.
        multilingual_model: Model spec for recordings not in English when ``model`` is English-only
            (tiny.en); None = no routing, and a non-English language is an error.
        english_min_logprob: An English-only fast model's decode whose mean log-probability
            (duration-weighted over its kept segments) is at least this is taken as English
            without identification; below it, or when every segment was dropped as non-speech,
            the multilingual model identifies the language
            (:func:`trax.asr.language.reads_as_english`). -0.7 lies between the English clips
            (the 40 of 41 benchdata speech clips with kept words scored -0.672 or higher) and the
            other languages (every benchdata-ml and espeak-ng clip with kept words: -0.797 or
            lower); ``bench/languages.py`` prints both sides.
        language_min_probability: An identified language below this probability is uncertain:
            the recording is decoded in its most probable language and flagged for review.
            Every benchdata-ml clip scored 0.98 or more; espeak-ng's French 0.42, and one
            English meeting excerpt that tiny.en decoded to nothing (trn01) 0.49.
        language_windows: Speech windows (of at most 30 s each, spread through the recording)
            scored for identification; each costs one encoder pass of the multilingual model.
        condition_on_previous_text: Feed the previous window's text as prompt. Off by default (as
            in WhisperX): with it on, tiny.en fell into a "first, first, first…" loop on the silent
            tail of LJ001-0012 and dev-set WER went from 5.3 % to 30.4 %.
        initial_prompt: Optional text to bias the first window.
    """

    model: str = "embedded:tiny.en"
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 5
    temperature: float = 0.0
    word_timestamps: bool = True
    batch_size: int = 2
    sequential_max_s: float = 30.0
    vad_filter: bool = False
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 160
    vad_speech_pad_ms: int = 400
    max_compression_ratio: float = 2.4
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    language: str | None = None
    multilingual_model: str | None = "embedded:base"
    english_min_logprob: float = -0.7
    language_min_probability: float = 0.5
    language_windows: int = 3
    condition_on_previous_text: bool = False
    initial_prompt: str | None = None

    def vad_parameters(self) -> dict[str, float]:
        """Silero VAD settings for faster-whisper.

        A dict, not ``VadOptions``: only from a dict does the batched pipeline set
        ``max_speech_duration_s`` to its 30 s window, so a long stretch of speech without a pause is
        split instead of being cut off at 30 s.
        """
        return {"threshold": self.vad_threshold, "min_silence_duration_ms": self.vad_min_silence_ms,
                "speech_pad_ms": self.vad_speech_pad_ms}

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> TranscribeOptions:
        """Build options from a config section; unknown keys were already rejected by the schema."""
        return cls(**settings)


@dataclass(slots=True)  # ~36,000 of them held for a 4-hour recording
class Word:
    """One word with its time span (seconds) and Whisper's probability for it."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(slots=True)
class Segment:
    """One decoded segment.

    Attributes:
        avg_logprob: Mean token log-probability. faster-whisper computes it per 30 s decoding
            window, so every segment of a window shares the value: it cannot rank segments.
        no_speech_prob: Probability of the no-speech token for the window.
        compression_ratio: gzip ratio of the text; high values flag repetition loops.
    """

    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


@dataclass
class DroppedSegment:
    """A decoded segment left out of the transcript because it is not speech.

    Attributes:
        reason: ``repetition`` (compression ratio above ``max_compression_ratio``) or
            ``no_speech`` (no-speech probability high and log-probability low).
        detail: The measured values against their thresholds, for a person reading the file.
    """

    start: float
    end: float
    text: str
    reason: str
    detail: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass
class Transcript:
    """A transcript file (``transcript.*.json``).

    ``language_probability`` is the identified language's probability, None when no identification
    ran (a configured language, or the English model's decode read as English).
    """

    sample_id: str
    language: str
    language_probability: float | None
    duration: float
    segments: list[Segment]
    provenance: dict[str, Any]
    dropped_segments: list[DroppedSegment] = field(default_factory=list)
    #: How the language was decided (:class:`trax.asr.language.Detection` as a dict).
    language_detection: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """All segment texts joined by single spaces (by nothing in Chinese, Japanese, Thai…)."""
        return word_separator(self.language).join(segment.text for segment in self.segments if segment.text)

    def serialize(self) -> dict[str, Any]:
        """JSON-ready dict matching ``workflow/schemas/transcript.schema.yaml``."""
        data = asdict(self)
        data["text"] = self.text
        return data


def resolve_device(options: TranscribeOptions) -> tuple[str, str]:
    """(device, compute_type) after resolving ``device: auto`` (CUDA with float16 when present)."""
    if options.device != "auto":
        return options.device, options.compute_type
    import_faster_whisper()
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        return "cuda", "float16"
    return "cpu", options.compute_type


def load_whisper(source: ModelSource, options: TranscribeOptions, num_workers: int = 1):  # -> WhisperModel
    """Load a faster-whisper model; a hub name that cannot be fetched is a clear error.

    Args:
        source: The resolved model.
        options: Decoding settings (device, compute type, threads).
        num_workers: Decodes this model may run at once (the server's worker count).
    """
    WhisperModel = import_faster_whisper().WhisperModel
    device, compute_type = resolve_device(options)
    try:
        return WhisperModel(
            weights_to_load(source, device, compute_type),
            device=device,
            compute_type=compute_type,
            cpu_threads=options.cpu_threads,
            num_workers=num_workers,
        )
    except Exception as exc:  # faster-whisper raises many types (HTTP, OS, RuntimeError)
        raise TraxError(source.spec, f"cannot load Whisper model ({type(exc).__name__}: {exc})") from None


def weights_to_load(source: ModelSource, device: str, compute_type: str) -> str:
    """What faster-whisper should load: for int8 on CPU, the model's int8 copy when it can have
    one (:mod:`trax.asr.quantized`: the same weights, without CTranslate2's per-load conversion);
    else the model itself. Provenance always names ``source``."""
    if device != "cpu" or compute_type not in INT8_COMPUTE_TYPES or source.path is None:
        return source.name
    try:
        copy = int8_copy(source.path, source.weights_sha256)
    except OSError as exc:  # a read-only or full cache folder costs load time, never the run
        log.warning("%s: no int8 copy (%s); CTranslate2 converts the weights at load", source.spec, exc)
        return source.name
    return str(copy) if copy else source.name


ProgressHook = Callable[[float, float], None]


def transcribe_audio(
    model: Any,
    audio: np.ndarray,
    options: TranscribeOptions,
    progress: ProgressHook | None = None,
) -> tuple[list[Segment], list[DroppedSegment], str, float]:
    """Decode ``audio``; return (segments, dropped non-speech segments, language, its probability).

    Args:
        model: A loaded ``faster_whisper.WhisperModel``.
        audio: 16 kHz mono float32 samples.
        options: Decoding settings; ``batch_size`` > 0 selects the VAD-first batched decoder.
        progress: Called with (seconds done, total seconds) after each segment.
    """
    total = len(audio) / 16000
    common = dict(
        language=options.language,
        beam_size=options.beam_size,
        temperature=options.temperature,
        word_timestamps=options.word_timestamps,
        initial_prompt=options.initial_prompt,
        log_prob_threshold=options.log_prob_threshold,
        no_speech_threshold=options.no_speech_threshold,
        compression_ratio_threshold=options.max_compression_ratio,
    )
    if options.batch_size > 0 and not _sequential_suits(audio, options):
        from faster_whisper import BatchedInferencePipeline

        # A new pipeline per call: it keeps per-decode state, and the server decodes concurrently.
        segments_iter, info = BatchedInferencePipeline(_SilencePaddedChunks(model)).transcribe(
            audio, batch_size=options.batch_size, vad_filter=True, vad_parameters=options.vad_parameters(), **common
        )
    else:
        segments_iter, info = model.transcribe(
            audio,
            vad_filter=options.vad_filter,
            vad_parameters=options.vad_parameters() if options.vad_filter else None,
            condition_on_previous_text=options.condition_on_previous_text,
            **common,
        )
    segments: list[Segment] = []
    dropped: list[DroppedSegment] = []
    for raw in segments_iter:
        segment = _segment(len(segments), raw)
        rejection = non_speech_reason(segment, options)
        if rejection is None:
            segments.append(segment)
        else:
            dropped.append(_dropped(segment, *rejection))
        if progress is not None:
            progress(min(raw.end, total), total)
    if progress is not None:
        progress(total, total)  # the tail after the last segment is done too
    return segments, dropped, info.language, round(float(info.language_probability), PROB_DIGITS)


def _sequential_suits(audio: np.ndarray, options: TranscribeOptions) -> bool:
    """Whether audio the batched decoder would get goes to the sequential one instead (see
    ``TranscribeOptions.sequential_max_s``): short enough, and with speech in it."""
    if len(audio) > options.sequential_max_s * SAMPLE_RATE:
        return False
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(**options.vad_parameters())))


class _SilencePaddedChunks:
    """A view of a ``WhisperModel`` whose feature extractor pads each speech chunk to 30 s of audio,
    and whose encoder takes a batch's chunks one at a time.

    faster-whisper's batched pipeline computes log-mel features of the bare chunk and pads the
    *features* with zeros, which Whisper never saw in training (it pads the audio, so the tail
    looks like silence at the chunk's own floor). Padding the audio instead costs a little more
    feature extraction and measured 24 instead of 26 word errors on the dev set (454 words;
    sequential decoding: 23), see ``bench/fast_pass.py``.

    With ``release_between_calls`` the heap's free pages go back to the OS before each batch's
    encode, generate and align (:func:`~trax.process.release_free_memory`). Each call frees
    ~150-200 MB of buffers of its own sizes (self-attention scores, beam states, cross-attention
    weights); what glibc kept of them stayed resident under the next call's peak, and the level
    between calls crept up over a long recording (base, refine's second decode: 335 -> 405 MB over
    an hour; released before each call it stayed ~300 MB, ``bench/refine_memory.py``). With refine
    on, the model server's peak from 10 to 60 minutes rose ~9 % without it, ~2 % with it
    (``bench/long.py``). Same bytes out, for some more page faults (~8 % of the decode's CPU in one
    loaded pair). The refine decode asks for it; the fast pass (flat already) does not.
    """

    def __init__(self, model: Any, release_between_calls: bool = False) -> None:
        self._model = model
        self.feature_extractor = _PaddingExtractor(model.feature_extractor)
        self._release = release_free_memory if release_between_calls else _keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(self, features: np.ndarray) -> Any:
        """The encoder's output for a batch of features (batch x mels x frames), one chunk at a time.

        The encoder's self-attention holds heads x 1500 x 1500 float32 scores per chunk (54 MB for
        tiny.en), and CTranslate2 keeps several such buffers at once, so a batch's encode was the
        decode's memory peak: tiny.en at batch 2 rose ~300 MB above the loaded model, one chunk
        at a time ~170 MB (``bench/server_memory.py``). Each row of the output depends on its own
        chunk only, and the bytes match the batched call's; the decoder still runs batched. A CPU
        model only: on a GPU the batched encode is the point of batching.
        """
        import numpy as np

        self._release()  # what the previous batch's align freed
        if self._model.model.device != "cpu" or len(features) < 2:
            encoded = self._model.encode(features)
        else:
            import ctranslate2

            rows = [np.asarray(self._model.encode(features[i : i + 1])) for i in range(len(features))]
            encoded = ctranslate2.StorageView.from_array(np.concatenate(rows))
        self._release()  # the encoder's attention buffers, before generate (its next call)
        return encoded

    def add_word_timestamps(self, *args: Any, **kwargs: Any) -> Any:
        """faster-whisper's word alignment of a decoded batch, after what generate freed is released."""
        self._release()
        return self._model.add_word_timestamps(*args, **kwargs)


def _keep() -> None:
    """Release nothing (:class:`_SilencePaddedChunks` without ``release_between_calls``)."""


class _PaddingExtractor:
    """Calls a faster-whisper ``FeatureExtractor`` on audio zero-padded to its 30 s window."""

    def __init__(self, extractor: Any) -> None:
        self._extractor = extractor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extractor, name)

    def __call__(self, audio: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        import numpy as np

        missing = self._extractor.n_samples - len(audio)
        if missing > 0:
            audio = np.concatenate([audio, np.zeros(missing, dtype=audio.dtype)])
        return self._extractor(audio, *args, **kwargs)


def non_speech_reason(segment: Segment, options: TranscribeOptions) -> tuple[str, str] | None:
    """Why a decoded segment is not speech, as (reason, detail), or None when it is kept.

    Whisper fills tones, noise and silence with fluent text: a repetition loop (high gzip
    compression ratio) or a segment the model itself thinks is silent (high no-speech probability)
    that it is also unsure of (low mean log-probability). Both thresholds are Whisper's own.
    """
    if segment.compression_ratio > options.max_compression_ratio:
        return "repetition", f"compression ratio {segment.compression_ratio:.2f} > {options.max_compression_ratio:g}"
    if segment.no_speech_prob > options.no_speech_threshold and segment.avg_logprob < options.log_prob_threshold:
        return "no_speech", (f"no-speech probability {segment.no_speech_prob:.2f} > {options.no_speech_threshold:g} "
                             f"and mean log-probability {segment.avg_logprob:.2f} < {options.log_prob_threshold:g}")
    return None


def _dropped(segment: Segment, reason: str, detail: str) -> DroppedSegment:
    return DroppedSegment(start=segment.start, end=segment.end, text=segment.text, reason=reason, detail=detail,
                          avg_logprob=segment.avg_logprob, no_speech_prob=segment.no_speech_prob,
                          compression_ratio=segment.compression_ratio)


def _segment(index: int, raw: Any) -> Segment:
    words = [
        Word(
            start=round(w.start, TIME_DIGITS),
            end=round(w.end, TIME_DIGITS),
            word=w.word.strip(),
            probability=round(float(w.probability), PROB_DIGITS),
        )
        for w in (raw.words or [])
    ]
    return Segment(
        id=index,
        start=round(raw.start, TIME_DIGITS),
        end=round(raw.end, TIME_DIGITS),
        text=raw.text.strip(),
        avg_logprob=round(float(raw.avg_logprob), PROB_DIGITS),
        no_speech_prob=round(float(raw.no_speech_prob), PROB_DIGITS),
        compression_ratio=round(float(raw.compression_ratio), PROB_DIGITS),
        words=words,
    )


ModelLoader = Callable[[dict[str, Any]], tuple[Any, ModelSource]]


def transcribe_wav(
    wav_path: str,
    sample_id: str,
    settings: dict[str, Any],
    model: Any,
    source: ModelSource,
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """Transcribe a normalized WAV with a loaded model; return the serialized transcript.

    The one function both the in-process path and the model server run, so their bytes agree.
    The recording's language decides the model (:func:`decode_in_language`); ``load_model`` gives
    the (model, source) for a ``transcribe_fast`` settings dict naming another model (the
    multilingual one), None loads it here.
    """
    options = TranscribeOptions.from_config(settings)
    pin_blas_threads()
    decoded = decode_in_language(wav_path, options, model, source, load_model or _load_here)
    models = {"asr": decoded.source.describe()}
    if decoded.identifier is not None:
        models["language_id"] = decoded.identifier.describe()
    transcript = Transcript(
        sample_id=sample_id,
        language=decoded.detection.language,
        language_probability=decoded.detection.probability,
        duration=round(wav_duration(wav_path), TIME_DIGITS),
        segments=decoded.segments,
        dropped_segments=decoded.dropped,
        language_detection=asdict(decoded.detection),
        provenance=provenance(
            config=settings,
            input_sha256=sha256_file(wav_path),
            models=models,
        ),
    )
    return transcript.serialize()


def _load_here(settings: dict[str, Any]) -> tuple[Any, ModelSource]:
    options = TranscribeOptions.from_config(settings)
    source = resolve_whisper(options.model)
    return load_whisper(source, options), source


@dataclass
class Decoded:
    """A recording decoded in its language: what :func:`decode_in_language` returns.

    Attributes:
        segments: Kept segments.
        dropped: Segments dropped as non-speech.
        detection: How the language was decided.
        source: The model that decoded the segments.
        identifier: The model that identified the language, when one did.
    """

    segments: list[Segment]
    dropped: list[DroppedSegment]
    detection: language.Detection
    source: ModelSource
    identifier: ModelSource | None = None


def decode_in_language(wav_path: str, options: TranscribeOptions, model: Any, source: ModelSource,
                       load_model: ModelLoader) -> Decoded:
    """Decode a recording with the model that knows its language.

    * A configured language (``options.language``, or the sample sheet's) skips detection.
    * An English-only fast model decodes first, exactly as it always did; when its mean
      log-probability reaches ``english_min_logprob`` the decode is kept as English (no
      identification: short English clips pay nothing more).
    * Otherwise the multilingual model identifies the language over ``language_windows`` speech
      windows. English keeps the fast decode; any other language is decoded by the multilingual
      model with its language token. A probability below ``language_min_probability`` is kept
      but marked ``uncertain`` (merge flags the recording for review).

    Raises:
        TraxError: ``<wav>: language '<xx>' cannot be decoded by <model> ...`` when the language
            needs a multilingual model and none is configured (or the one configured is
            English-only).
    """
    check_language(options.language, f"{wav_path}: transcribe_fast.language")
    hook = functools.partial(progress.report, "transcribe")
    english_only = not language.is_multilingual(model)
    if options.language is not None:
        if options.language == "en" or not english_only:
            segments, dropped, _, _ = transcribe_in_pieces(model, wav_path, options, hook)
            detection = language.Detection(options.language, "configured", options.model,
                                           "language given by config or sample sheet")
            return Decoded(segments, dropped, detection, source)
        other, other_source = _multilingual(wav_path, options, options.language, load_model)
        return _decode_other(wav_path, options, other, other_source, language.Detection(
            options.language, "configured", options.multilingual_model or "", "language given by config or sample sheet"))
    first: list[float | None] = [None]
    if english_only:
        # Long recordings: stop after the first piece when it does not read as English.
        def first_check(found: list[Segment], dropped: list[DroppedSegment]) -> bool:
            english, first[0], _ = language.reads_as_english(found, dropped, options.english_min_logprob)
            return english

        decoded = transcribe_in_pieces(model, wav_path, options, hook, first_check)
        if decoded is not None:
            english, first[0], reason = language.reads_as_english(decoded[0], decoded[1], options.english_min_logprob)
            if english:
                score = None if first[0] is None else round(first[0], PROB_DIGITS)
                detection = language.Detection("en", "fast_pass", options.model, reason, fast_pass_logprob=score)
                return Decoded(decoded[0], decoded[1], detection, source)
        if options.multilingual_model is None:  # no routing: the English model's decode stands
            segments, dropped, _, _ = decoded or transcribe_in_pieces(model, wav_path, options, hook)
            detection = language.Detection("en", "fast_pass", options.model, "no multilingual_model configured")
            return Decoded(segments, dropped, detection, source)
        identifier, identifier_source = _multilingual(wav_path, options, None, load_model)
    else:
        decoded, identifier, identifier_source = None, model, source
    windows = language.speech_windows(wav_path, options.vad_parameters(), options.language_windows)
    ranked, speech_s = language.identify(identifier, windows)
    fast_score = None if first[0] is None else round(first[0], PROB_DIGITS)
    if not ranked:
        segments, dropped, _, _ = decoded or transcribe_in_pieces(model, wav_path, options, hook)
        detection = language.Detection("en", "no_speech", options.model, "no speech found to identify the language",
                                       fast_pass_logprob=fast_score)
        return Decoded(segments, dropped, detection, source)
    best, probability = ranked[0]
    uncertain = probability < options.language_min_probability
    detection = language.Detection(
        language=best, method="identified", model=options.model, probability=round(probability, PROB_DIGITS),
        candidates=[{"language": code, "probability": round(p, PROB_DIGITS)} for code, p in ranked[: 1 + language.RUNNER_UPS]],
        windows=len(windows), speech_s=round(speech_s, TIME_DIGITS), fast_pass_logprob=fast_score, uncertain=uncertain,
        reason=(f"identified as '{best}' with probability {probability:.2f}"
                + (f", below {options.language_min_probability:g}: uncertain" if uncertain else "")),
    )
    if best == "en" or not english_only:
        if decoded is None:  # stopped after the first piece, or not decoded yet (multilingual fast model)
            segments, dropped, _, _ = transcribe_in_pieces(
                model, wav_path, dataclasses.replace(options, language=best), hook)
        else:
            segments, dropped = decoded[0], decoded[1]
        return Decoded(segments, dropped, detection, source, identifier_source)
    detection.model = options.multilingual_model or ""
    result = _decode_other(wav_path, options, identifier, identifier_source, detection)
    result.identifier = identifier_source
    return result


def _multilingual(wav_path: str, options: TranscribeOptions, wanted: str | None,
                  load_model: ModelLoader) -> tuple[Any, ModelSource]:
    """The multilingual model; a clear error when there is none that can decode ``wanted``."""
    spec = options.multilingual_model
    if spec is not None:
        other, other_source = load_model({**asdict(options), "model": spec})
        if language.is_multilingual(other):
            return other, other_source
    else:
        spec = options.model
    raise TraxError(wav_path, f"language '{wanted or 'not English'}' cannot be decoded by {spec} (English only); "
                              "set transcribe_fast.multilingual_model to a multilingual Whisper model")


def _decode_other(wav_path: str, options: TranscribeOptions, model: Any, source: ModelSource,
                  detection: language.Detection) -> Decoded:
    other = dataclasses.replace(options, model=source.spec, language=detection.language)
    segments, dropped, _, _ = transcribe_in_pieces(model, wav_path, other,
                                                   functools.partial(progress.report, "transcribe"))
    return Decoded(segments, dropped, detection, source)


def transcribe_in_pieces(
    model: Any,
    wav_path: str,
    options: TranscribeOptions,
    progress: ProgressHook | None = None,
    first_check: Callable[[list[Segment], list[DroppedSegment]], bool] | None = None,
) -> tuple[list[Segment], list[DroppedSegment], str, float] | None:
    """Decode a normalized WAV piece by piece (:func:`trax.io.media.audio_pieces`, at most 5 minutes
    each, cut at pauses), so memory does not grow with the recording; return what
    :func:`transcribe_audio` returns, for the whole recording.

    faster-whisper builds features for all the audio it is given (~160 kB per second), so a
    4-hour array alone would be 900 MB plus several GB of STFT. A recording of one piece decodes
    exactly as a whole. Later pieces are decoded in the language detected on the first (unless
    configured), so a transcript never switches language at a cut; times are shifted by each
    piece's offset and segment ids run on. ``first_check`` sees the first piece's segments (kept,
    dropped) when more pieces follow; when it returns False decoding stops and None is returned.
    """
    total = wav_duration(wav_path)
    segments: list[Segment] = []
    dropped: list[DroppedSegment] = []
    language: str | None = options.language
    language_probability = 1.0
    for number, piece in enumerate(audio_pieces(wav_path)):
        offset = piece.offset_s
        hook = None if progress is None else (lambda done, _total, offset=offset: progress(offset + done, total))
        piece_options = options if number == 0 else dataclasses.replace(options, language=language)
        found, piece_dropped, piece_language, piece_probability = transcribe_audio(
            model, piece.samples, piece_options, hook)
        if number == 0:
            language, language_probability = piece_language, piece_probability
            if first_check is not None and piece.offset_s + len(piece.samples) / SAMPLE_RATE < total - 0.01 \
                    and not first_check(found, piece_dropped):
                return None
        for segment in found:
            segment.id = len(segments)
            if offset:
                segment.start = round(segment.start + offset, TIME_DIGITS)
                segment.end = round(segment.end + offset, TIME_DIGITS)
                for word in segment.words:
                    word.start = round(word.start + offset, TIME_DIGITS)
                    word.end = round(word.end + offset, TIME_DIGITS)
            segments.append(segment)
        for item in piece_dropped:
            item.start, item.end = round(item.start + offset, TIME_DIGITS), round(item.end + offset, TIME_DIGITS)
            dropped.append(item)
    return segments, dropped, language or "en", language_probability


def transcribe_file(
    wav_path: str,
    output_path: str,
    sample_id: str,
    settings: dict[str, Any],
    remote: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Transcribe a normalized WAV into ``output_path`` (``transcript.fast.json``).

    Args:
        wav_path: ``audio.wav`` from normalize (relative to the workflow directory).
        output_path: Destination JSON.
        sample_id: The recording's id.
        settings: The ``transcribe_fast`` config section (also recorded in provenance).
        remote: Runs a named request elsewhere and returns its result (the model server, passed
            in by the runtime); None loads the model in this process. Outputs are identical.
    """
    if remote is not None:
        log.info("transcribing %s via the model server", wav_path)
        transcript = remote("transcribe", {"wav_path": wav_path, "sample_id": sample_id, "settings": settings})
    else:
        options = TranscribeOptions.from_config(settings)
        source = resolve_whisper(options.model)
        model = load_whisper(source, options)
        transcript = transcribe_wav(wav_path, sample_id, settings, model=model, source=source)
    write_json_atomic(output_path, transcript, schema="transcript")
    return transcript
