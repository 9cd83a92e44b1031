"""The review page: ``results/<id>/review.html`` and its compressed audio ``review.webm``.

One self-contained HTML file per recording that works opened straight from disk (``file://``), with
no server and nothing loaded from the network: the transcript is embedded as JSON in a
``<script type="application/json">`` block and rendered by ``review_assets/review.js`` (inlined,
with ``review.css``) through ``textContent`` only, so markup in a transcript is shown as text. The
audio player plays an Opus copy of ``audio.wav`` written next to the page and linked relatively.

DOM contract (README, "Review page"): every utterance is a ``div.utt`` with ``id="u<id>"``,
``data-id`` and ``data-speaker``, and ``data-needs-review`` (its review reason) when flagged; every
word is a ``span.w`` with ``data-start``/``data-end`` in seconds; speaker labels are ``.spk``
elements with ``data-speaker``; ``<html data-ready="1">`` once the page is interactive.

Size: words are embedded as ``[start, end, word, probability]`` arrays (about 30 bytes a word),
so a 4-hour recording (~38,000 words) gives a page of about 2 MB; ``bench/review.py`` measures it.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trax.errors import TraxError
from trax.io.jsonio import atomic_path, iter_json_list, read_json, read_json_head
from trax.io.media import SAMPLE_RATE
from trax.io.provenance import sha256_file
from trax.quality.estimates import LOW_PROB

#: The audio file next to the page (WebM: its cues make seeking in a 4-hour file immediate).
AUDIO_NAME = "review.webm"


@dataclass(frozen=True)
class ReviewOptions:
    """The ``review`` config section.

    Attributes:
        audio_bitrate_kbps: Opus bit rate of the page's audio copy. 24 kb/s mono (Opus in its
            speech mode) is clear speech at 43 MB for 4 hours, a seventh of the 16 kHz WAV.
        audio_compression_level: libopus's complexity (0-10). 5 encodes in about half the time
            of its default 10 (the job competes with transcription for the cores) at nearly the
            same spectral fidelity and size; 10 for the finest encoding.
        low_probability: Words below this probability are marked as least certain (0.5: the
            quality model's own "doubtful word" threshold, :data:`trax.quality.estimates.LOW_PROB`).
    """

    audio_bitrate_kbps: int = 24
    audio_compression_level: int = 5
    low_probability: float = LOW_PROB

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | None) -> ReviewOptions:
        return cls(**(settings or {}))


def encode_audio(wav_path: str, output_path: str, settings: Mapping[str, Any] | None = None) -> None:
    """The ``review_audio`` rule: ``audio.wav`` → Opus in WebM, byte-identical on every run.

    Encoded in this process with PyAV's libopus, streamed frame by frame (memory stays flat for
    hours of audio): the same libopus settings as the ffmpeg 6.0 binary took more than twice the
    CPU there (``bench/opus_level.py``), and this job shares the cores with transcription. The
    container and codec are ``bitexact`` (no encoder version string, no random ids) and libopus
    runs on one thread, so the same WAV always gives the same bytes.
    """
    import av

    options = ReviewOptions.from_config(settings)
    with atomic_path(output_path, suffix=".webm") as tmp:
        try:
            with av.open(wav_path) as source, av.open(str(tmp), "w", format="webm",
                                                      options={"fflags": "+bitexact"}) as target:
                stream = target.add_stream("libopus", rate=SAMPLE_RATE, options={
                    "application": "voip", "compression_level": str(options.audio_compression_level)})
                stream.bit_rate = options.audio_bitrate_kbps * 1000
                stream.layout = "mono"
                stream.codec_context.thread_count = 1
                stream.codec_context.flags |= av.codec.context.Flags.bitexact
                for frame in source.decode(audio=0):
                    frame.pts = None  # the encoder counts samples itself
                    target.mux(stream.encode(frame))
                target.mux(stream.encode(None))
        except av.FFmpegError as exc:
            raise TraxError(wav_path, f"could not encode the review audio: {exc.strerror or exc}") from exc


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as escapes, so ``</script>`` in a
    transcript cannot end the block (JavaScript's line separators too, for old parsers)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def page_utterance(utterance: Mapping[str, Any]) -> dict[str, Any]:
    """One utterance as the page embeds it: words as ``[start, end, word, probability]`` and, for
    a corrected word, its original text as a fifth element."""
    words = []
    for word in utterance["words"]:
        item = [word["start"], word["end"], word["word"], word["probability"]]
        if word.get("corrected"):
            item.append(word.get("original") or "")
        words.append(item)
    page = {"id": utterance["id"], "speaker": utterance["speaker"], "start": utterance["start"],
            "end": utterance["end"], "wer": utterance.get("estimated_wer"),
            "reason": utterance["review_reason"] if utterance.get("needs_review") else None, "words": words}
    if utterance.get("reviewed"):
        page["reviewed"] = True
    if utterance.get("corrected"):
        page["corrected"] = list(utterance["corrected"])
    if utterance.get("speaker_was"):
        page["speaker_was"] = utterance["speaker_was"]
    return page


def _asset(name: str) -> str:
    return resources.files("trax.transcript").joinpath("review_assets", name).read_text(encoding="utf-8")


def page_chunks(head: Mapping[str, Any], utterances: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The page's text in pieces, one utterance's JSON at a time (the job stays flat in memory)."""
    title = f"Review: {head['sample_id']}"
    yield ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           # Nothing from the network: only this page's own inline code and the audio next to it.
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
           "script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self' file: blob:; img-src data:\">\n"
           f"<title>{html.escape(title)}</title>\n<style>\n{_asset('review.css')}</style>\n</head>\n<body>\n<header>\n"
           f"<h1>{html.escape(title)}</h1>\n<div class=\"bar\">"
           f"<audio id=\"audio\" controls preload=\"metadata\" src=\"{html.escape(head['audio'])}\"></audio>"
           "<button id=\"save\" type=\"button\">Save corrections</button></div>\n"
           "<div id=\"speakers\"></div><div id=\"status\"></div><div id=\"missing-audio\"></div>\n</header>\n"
           "<main id=\"transcript\"></main>\n<script type=\"application/json\" id=\"trax-data\">")
    fields = _script_json(dict(head))
    yield fields[:-1] + ",\"utterances\":["
    for index, utterance in enumerate(utterances):
        yield ("," if index else "") + _script_json(page_utterance(utterance))
    yield f"]}}</script>\n<script>\n{_asset('review.js')}</script>\n</body></html>\n"


def _speakers(original: Mapping[str, Any], shown: Mapping[str, Any]) -> list[dict[str, Any]]:
    names = {s["id"]: s.get("name") for s in original["speakers"]}
    return [{"id": s["id"], "name": s.get("name"), "original_name": names.get(s["id"]), "label": s.get("label")}
            for s in shown["speakers"]]


def write_review_page(merged_path: str, output_path: str, audio_path: str, settings: Mapping[str, Any] | None = None,
                      corrected_path: str | None = None, corrections_path: str | None = None) -> None:
    """The ``review`` rule: write ``review.html`` for one recording.

    Args:
        merged_path: ``merged.json`` (its sha256 identifies what corrections apply to).
        output_path: Destination ``review.html``.
        audio_path: The compressed audio; linked by its path relative to the page.
        settings: The ``review`` config section.
        corrected_path: ``merged.corrected.json`` when corrections exist: the page then shows it,
            with the corrected words and utterances marked.
        corrections_path: The ``corrections.json`` it was made from, embedded so that further
            corrections on the page add to it.
    """
    options = ReviewOptions.from_config(settings)
    original = read_json_head(merged_path, {"utterances"})
    shown_path = corrected_path or merged_path
    shown = read_json_head(shown_path, {"utterances"}) if corrected_path else original
    quality = original.get("quality") or {}
    head = {
        "format": 1,
        "sample_id": original["sample_id"],
        "language": original["language"],
        "duration": original["duration"],
        "audio": os.path.relpath(audio_path, Path(output_path).parent).replace(os.sep, "/"),
        "input_sha256": original["provenance"]["input_sha256"],
        "merged_sha256": sha256_file(merged_path),
        "low_probability": options.low_probability,
        "quality": {"estimated_wer": quality.get("estimated_wer"), "needs_review": quality.get("needs_review"),
                    "reasons": quality.get("reasons") or []},
        "speakers": _speakers(original, shown),
        "corrections": read_json(corrections_path) if corrections_path else None,
    }
    with atomic_path(output_path, suffix=".html") as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(page_chunks(head, iter_json_list(shown_path, "utterances")))
