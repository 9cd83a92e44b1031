"""Human-facing exports of ``merged.json``: SubRip, WebVTT, plain text and Markdown.

Subtitle cues are cut from utterances (so a cue never mixes speakers): words are packed greedily
into lines of at most ``max_line_chars`` display columns (a Chinese or Japanese character takes
two: :func:`trax.io.languages.display_width`), at most ``max_lines`` lines per cue, and a cue
never lasts longer than ``max_cue_s``. Times are whole milliseconds; a cue that would start before
the previous one ends is moved to start at that end, so a track never overlaps itself. Everything is
a pure function of ``merged.json`` and the ``export`` config section, so reruns are byte-identical.

* ``transcript.srt``: the speaker's display name prefixes the first line of a cue where the
  speaker changes (``Alice: …``), counted within the line limit.
* ``transcript.vtt``: every cue is a voice span ``<v Alice>…</v>`` (the speaker id when no name).
* ``transcript.txt``: one paragraph per utterance under a ``[start - end] speaker`` header.
* ``transcript.md``: a speaker table, then one paragraph per utterance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trax.io.jsonio import iter_json_list, read_json_head, write_text_atomic
from trax.io.languages import NO_SPACE_LANGUAGES, display_width, word_separator
from trax.transcript.merge import display_name


@dataclass(frozen=True)
class ExportOptions:
    """The ``export`` config section.

    Attributes:
        max_line_chars: Longest subtitle line, in display columns (42: the common broadcast and
            Netflix limit for Latin scripts; a wide CJK character counts 2, so 21 of them fit, near
            Netflix's 16-23 for Chinese and Japanese). A single longer word is hard-split, except
            in languages written without spaces, whose words are never split.
        max_lines: Lines per cue (2: the usual maximum that stays readable).
        max_cue_s: Longest cue on screen, in seconds (7 s: the common upper bound for one subtitle).
        speaker_prefix: Prefix SRT cues with ``Name: `` where the speaker changes (SRT has no voice tag).
    """

    max_line_chars: int = 42
    max_lines: int = 2
    max_cue_s: float = 7.0
    speaker_prefix: bool = True

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> ExportOptions:
        """Build options from the config section (unknown keys were rejected by the schema)."""
        return cls(**settings)


@dataclass
class Cue:
    """One subtitle cue: times in milliseconds and its text lines."""

    start_ms: int
    end_ms: int
    speaker: str
    lines: list[str]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _chunks(word: str, width: int, splittable: bool = True) -> list[str]:
    """``word`` cut into pieces of at most ``width`` display columns (whole when not ``splittable``)."""
    if not splittable or display_width(word) <= width:
        return [word]
    pieces, current = [], ""
    for char in word:
        if current and display_width(current + char) > width:
            pieces.append(current)
            current = ""
        current += char
    return [*pieces, current] if current else pieces or [word]


def utterance_cues(utterance: dict[str, Any], options: ExportOptions, prefix: str = "",
                   language: str | None = None) -> list[Cue]:
    """Cut one utterance into cues obeying the line, line-count and duration limits.

    ``prefix`` (e.g. ``"Alice: "``) is put in front of the first line of the first cue and counted
    within the line limit. ``language`` decides how words are joined (no spaces in Chinese,
    Japanese, Thai…) and whether a word too wide for a line may be split (never there).
    """
    separator = word_separator(language)
    splittable = language not in NO_SPACE_LANGUAGES
    cues: list[Cue] = []
    lines: list[str] = []
    start: float | None = None
    end = 0.0
    width = options.max_line_chars

    def flush() -> None:
        nonlocal lines, start
        if lines:
            cues.append(Cue(_ms(start), _ms(end), utterance["speaker"], lines))
        lines, start = [], None

    for index, word in enumerate(utterance["words"]):
        text = prefix + word["word"] if index == 0 else word["word"]
        for piece in _chunks(text, width, splittable):
            if start is not None and word["end"] - start > options.max_cue_s:
                flush()
            if lines and display_width(lines[-1] + separator + piece) <= width:
                lines[-1] += separator + piece
            elif len(lines) < options.max_lines:
                lines.append(piece)
            else:
                flush()
                lines.append(piece)
            if start is None:
                start, end = word["start"], word["end"]
            end = max(end, word["end"])
    flush()
    return cues


def build_cues(merged: dict[str, Any], options: ExportOptions, with_prefix: bool) -> Iterator[Cue]:
    """All cues of a transcript in time order, with overlaps and zero lengths removed."""
    previous_speaker = None
    last_end = 0
    for utterance in merged["utterances"]:
        prefix = ""
        if with_prefix and utterance["speaker"] != previous_speaker:
            prefix = f"{display_name(merged, utterance['speaker'])}: "
        previous_speaker = utterance["speaker"]
        for cue in utterance_cues(utterance, options, prefix, merged.get("language")):
            cue.start_ms = max(cue.start_ms, last_end)
            cue.end_ms = max(cue.end_ms, cue.start_ms + 1)
            last_end = cue.end_ms
            yield cue


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def to_srt(merged: dict[str, Any], options: ExportOptions) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line between cues."""
    blocks = []
    for number, cue in enumerate(build_cues(merged, options, options.speaker_prefix), 1):
        timing = f"{_clock(cue.start_ms, ',')} --> {_clock(cue.end_ms, ',')}"
        blocks.append("\n".join([str(number), timing, *cue.lines]) + "\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(merged: dict[str, Any], options: ExportOptions) -> str:
    """WebVTT text: each cue is one voice span ``<v Name>…</v>`` for its speaker."""
    blocks = ["WEBVTT\n"]
    for cue in build_cues(merged, options, with_prefix=False):
        timing = f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}"
        voice = _vtt_escape(display_name(merged, cue.speaker))
        lines = [_vtt_escape(line) for line in cue.lines]
        lines[0] = f"<v {voice}>{lines[0]}"
        lines[-1] += "</v>"
        blocks.append("\n".join([timing, *lines]) + "\n")
    return "\n".join(blocks)


def clock_s(seconds: float) -> str:
    """``HH:MM:SS.mmm`` for a time in seconds."""
    return _clock(_ms(seconds), ".")


def speaker_heading(merged: dict[str, Any], speaker: str) -> str:
    """``Alice (SPEAKER_1)`` when the speaker has a name, else ``SPEAKER_1``."""
    name = display_name(merged, speaker)
    return f"{name} ({speaker})" if name != speaker else speaker


def to_txt(merged: dict[str, Any], text_key: str = "text") -> str:
    """Plain text: ``[start - end] speaker`` header, the utterance text, a blank line."""
    blocks = [
        f"[{clock_s(u['start'])} - {clock_s(u['end'])}] {speaker_heading(merged, u['speaker'])}\n{u[text_key]}\n"
        for u in merged["utterances"]
    ]
    return "\n".join(blocks)


def _md_escape(text: str) -> str:
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text


def to_markdown(merged: dict[str, Any], title: str, text_key: str = "text") -> str:
    """Markdown: a title, a table of speakers with their totals, then the non-empty utterances."""
    out = [f"# {_md_escape(title)}", "", "| speaker | name | speech (s) | words | utterances |",
           "|---|---|---:|---:|---:|"]
    for speaker in merged["speakers"]:
        out.append(f"| {speaker['id']} | {_md_escape(speaker.get('name') or '')} | {speaker['speech_s']:.1f} "
                   f"| {speaker['words']} | {speaker['utterances']} |")
    out.append("")
    for utterance in merged["utterances"]:
        if not utterance[text_key]:
            continue  # e.g. an utterance that was only "um", after enhancement
        heading = _md_escape(speaker_heading(merged, utterance["speaker"]))
        out += [f"**{heading}** · {clock_s(utterance['start'])} – {clock_s(utterance['end'])}  ",
                _md_escape(utterance[text_key]), ""]
    return "\n".join(out)


def export_files(merged_path: str, outputs: dict[str, str], settings: dict[str, Any]) -> None:
    """The ``export`` rule: write every requested format.

    Args:
        merged_path: ``merged.json``.
        outputs: Format (``srt``, ``vtt``, ``txt``, ``md``) → destination path.
        settings: The ``export`` config section.
    """
    # Utterances are read one at a time, once per format: this runs in the Snakemake process, which
    # must not grow with the recording (trax.io.jsonio).
    head = read_json_head(merged_path, {"utterances"})
    options = ExportOptions.from_config(settings)
    title = f"Transcript: {head['sample_id'] or Path(merged_path).parent.name}"
    renderers = {
        "srt": lambda merged: to_srt(merged, options),
        "vtt": lambda merged: to_vtt(merged, options),
        "txt": to_txt,
        "md": lambda merged: to_markdown(merged, title),
    }
    for fmt, path in outputs.items():
        write_text_atomic(path, renderers[fmt]({**head, "utterances": iter_json_list(merged_path, "utterances")}))
