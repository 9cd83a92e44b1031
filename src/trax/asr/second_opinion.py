"""The second decode of the combining refine mode: whole speech chunks, read piece by piece.

The recording is read in pieces (:func:`trax.io.media.audio_pieces`, at most 5 minutes each), so
memory does not grow with its length. In each piece Silero VAD finds speech; consecutive speech
regions are merged into chunks of at most 30 s (one Whisper window), each decoded as a whole with
the audio between its regions kept, so the decoder hears every word with its sentence around it
(the old span mode padded 2-4 s fragments to 30 s and lost that context). All chosen chunks of a
piece go to one call with ``clip_timestamps``; every chunk decodes in its own window, nothing of the
previous chunk's text is fed back. Batched (4 chunks at a time, as the fast pass) by default: on the
5-minute bench file base took 37 s instead of 67 s with the sequential decoder (2 busy cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trax import progress
from trax.asr.transcribe import (
    PROB_DIGITS,
    TIME_DIGITS,
    TranscribeOptions,
    _segment,
    _SilencePaddedChunks,
    non_speech_reason,
)
from trax.io.media import SAMPLE_RATE, audio_pieces, wav_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Longest chunk: one Whisper window.
CHUNK_S = 30.0


@dataclass(frozen=True)
class Chunk:
    """A stretch of speech decoded (or skipped) as one unit; times in seconds of the recording.

    Attributes:
        doubtful: Fast-pass words inside it whose probability is below the threshold.
        decoded: Whether the second model decoded it.
    """

    start: float
    end: float
    doubtful: int
    decoded: bool


def speech_chunks(samples: Any, options: TranscribeOptions, max_s: float = CHUNK_S) -> list[tuple[int, int]]:
    """Speech of ``samples`` as ``(start, stop)`` sample ranges of at most ``max_s``: Silero VAD
    regions (the fast pass's VAD settings), neighbours merged while the merged chunk fits."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(samples, VadOptions(**options.vad_parameters(), max_speech_duration_s=max_s))
    limit = int(max_s * SAMPLE_RATE)
    chunks: list[list[int]] = []
    for region in regions:
        if chunks and region["end"] - chunks[-1][0] <= limit:
            chunks[-1][1] = region["end"]
        else:
            chunks.append([region["start"], region["end"]])
    return [(start, stop) for start, stop in chunks]


def decode_chunks(
    model: Any,
    wav_path: str,
    options: TranscribeOptions,
    hotwords: str | None,
    choose: Callable[[float, float], int] | None = None,
) -> tuple[list[dict[str, Any]], list[Chunk]]:
    """Decode the recording's speech chunks with ``model``; return (words, chunks) of the whole
    recording (:func:`decode_pieces`, gathered: for benches and tests on short audio).

    Args:
        model: A loaded ``faster_whisper.WhisperModel``.
        wav_path: The normalized audio.
        options: Decoding settings (``language`` forced, beam, VAD parameters, non-speech rules).
        hotwords: The domain's bias text, given to every window.
        choose: Counts the doubtful fast words in ``(start, end)`` seconds; a chunk with none is
            not decoded. None decodes every chunk.

    Returns:
        Words with absolute times (segments the non-speech rules reject give none), and every
        chunk with whether it was decoded.
    """
    words: list[dict[str, Any]] = []
    chunks: list[Chunk] = []
    for piece_chunks, piece_words in decode_pieces(model, wav_path, options, hotwords, choose):
        chunks += piece_chunks
        words += piece_words
    return words, chunks


def decode_pieces(
    model: Any,
    wav_path: str,
    options: TranscribeOptions,
    hotwords: str | None,
    choose: Callable[[float, float], int] | None = None,
) -> Iterator[tuple[list[Chunk], list[dict[str, Any]]]]:
    """Decode the recording piece by piece (arguments as :func:`decode_chunks`); yield each
    piece's (chunks, words) as soon as it is decoded, so a caller that consumes them in turn holds
    one piece's words at a time, however long the recording."""
    total = wav_duration(wav_path)
    for piece in audio_pieces(wav_path):
        offset = piece.offset_s
        chunks: list[Chunk] = []
        found = []
        for start, stop in speech_chunks(piece.samples, options):
            begin, end = round(offset + start / SAMPLE_RATE, TIME_DIGITS), round(offset + stop / SAMPLE_RATE, TIME_DIGITS)
            doubtful = choose(begin, end) if choose is not None else 0
            chunk = Chunk(begin, end, doubtful, choose is None or doubtful > 0)
            chunks.append(chunk)
            if chunk.decoded:
                found.append((start / SAMPLE_RATE, stop / SAMPLE_RATE))
        words = _decode_piece(model, piece.samples, offset, found, options, hotwords) if found else []
        progress.report("refine", min(offset + len(piece.samples) / SAMPLE_RATE, total), total)
        yield chunks, words


def _decode_piece(model: Any, samples: Any, offset: float, clips: list[tuple[float, float]],
                  options: TranscribeOptions, hotwords: str | None) -> list[dict[str, Any]]:
    """Decode ``clips`` (seconds in the piece): ``options.batch_size`` at a time through
    faster-whisper's batched pipeline (each chunk padded with silence to its 30 s window, as the
    fast pass does), or one after another with the sequential decoder when it is 0."""
    common = {"language": options.language, "beam_size": options.beam_size, "temperature": options.temperature,
              "word_timestamps": True, "hotwords": hotwords, "compression_ratio_threshold": options.max_compression_ratio,
              "log_prob_threshold": options.log_prob_threshold, "no_speech_threshold": options.no_speech_threshold}
    if options.batch_size > 0:
        from faster_whisper import BatchedInferencePipeline

        segments, _ = BatchedInferencePipeline(_SilencePaddedChunks(model, release_between_calls=True)).transcribe(
            samples, batch_size=options.batch_size, clip_timestamps=[{"start": a, "end": b} for a, b in clips], **common)
    else:
        segments, _ = model.transcribe(samples, vad_filter=False, condition_on_previous_text=False,
                                       clip_timestamps=[t for clip in clips for t in clip], **common)
    words = []
    for raw in segments:
        segment = _segment(0, raw)
        if non_speech_reason(segment, options) is not None:
            continue
        words += [{"start": round(w.start + offset, TIME_DIGITS), "end": round(w.end + offset, TIME_DIGITS),
                   "word": w.word, "probability": round(w.probability, PROB_DIGITS)} for w in segment.words]
    return words
