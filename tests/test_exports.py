"""Subtitle and text exports, parsed back with third-party parsers (srt, webvtt-py)."""

import html
import re
from pathlib import Path

import pytest
import srt
import webvtt

from conftest import SAMPLE_DIR
from trax.transcript.exports import ExportOptions, export_files, to_srt, to_vtt
from trax.io.jsonio import read_json
from trax.io.annotation import Turn
from trax.transcript.merge import MergeOptions, merge, merge_files

FORMATS = ("srt", "vtt", "txt", "md")


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _long_merged() -> dict:
    """Two speakers; a 30-word utterance lasting 15 s and a word longer than a line."""
    words = [(f"word{i}", i * 0.5, i * 0.5 + 0.4) for i in range(30)]
    words.append(("Pneumonoultramicroscopicsilicovolcanoconiosis-supercalifragilistic", 15.0, 16.0))
    words += [("yes", 16.2, 16.4), ("exactly", 16.4, 16.9), ("<b>&", 16.9, 17.0)]
    transcript = {"sample_id": "long", "language": "en", "duration": 20.0,
                  "segments": [{"words": [{"word": w, "start": s, "end": e, "probability": 0.8} for w, s, e in words]}]}
    return merge(transcript, [Turn(0.0, 16.05, "a"), Turn(16.1, 17.5, "b")], MergeOptions(), {"SPEAKER_2": "Bob"})


def _check_track(cues: list[tuple[float, float, list[str]]], options: ExportOptions) -> None:
    assert cues, "no cues"
    for (start, end, lines), following in zip(cues, cues[1:] + [None]):
        assert end > start
        assert 1 <= len(lines) <= options.max_lines, lines
        assert all(len(line) <= options.max_line_chars for line in lines), lines
        if following is not None:
            assert following[0] >= end, "cues overlap or are out of order"


@pytest.mark.parametrize("options", [ExportOptions(), ExportOptions(max_line_chars=20, max_lines=1, max_cue_s=3.0)])
def test_srt_and_vtt_parse_and_respect_limits(options: ExportOptions, sample_fast_transcript: Path, tmp_path: Path) -> None:
    merge_files(str(sample_fast_transcript), str(SAMPLE_DIR / "sample.rttm"), str(tmp_path / "m.json"), {},
                "SPEAKER_1=Diane;SPEAKER_2=Sheila")
    real = read_json(tmp_path / "m.json")
    for merged in (real, _long_merged()):
        all_words = " ".join(u["text"] for u in merged["utterances"]).split()

        subtitles = list(srt.parse(to_srt(merged, options)))
        cues = [(s.start.total_seconds(), s.end.total_seconds(), s.content.split("\n")) for s in subtitles]
        _check_track(cues, options)
        assert [s.index for s in subtitles] == list(range(1, len(subtitles) + 1))
        text = " ".join(re.sub(r"^(Diane|Sheila|Bob|SPEAKER_\d): ", "", line) for s in subtitles
                        for line in s.content.split("\n"))
        assert "".join(text.split()) == "".join(all_words), "SRT lost or reordered words"

        track = webvtt.from_string(to_vtt(merged, options))
        cues = [(_seconds(c.start), _seconds(c.end), html.unescape(c.text).split("\n")) for c in track.captions]
        _check_track(cues, options)
        voices = [c.voice for c in track.captions]
        if merged is real:
            assert set(voices) == {"Diane", "Sheila"}
        else:
            assert voices[0] == "SPEAKER_1" and voices[-1] == "Bob"
            assert "&lt;b&gt;&amp;" in track.captions[-1].raw_text
        # Cues never span longer than max_cue_s unless one word alone is longer.
        assert all(end - start <= options.max_cue_s + 1e-6 for start, end, _ in cues)


def test_export_files_text_and_markdown(sample_fast_transcript: Path, tmp_path: Path) -> None:
    merged_path = tmp_path / "merged.json"
    merge_files(str(sample_fast_transcript), str(SAMPLE_DIR / "sample.rttm"), str(merged_path), {},
                "SPEAKER_1=Diane")
    outputs = {fmt: str(tmp_path / f"transcript.{fmt}") for fmt in FORMATS}
    export_files(str(merged_path), outputs, {})
    first = {fmt: Path(path).read_bytes() for fmt, path in outputs.items()}
    export_files(str(merged_path), outputs, {})
    assert {fmt: Path(path).read_bytes() for fmt, path in outputs.items()} == first

    txt = first["txt"].decode()
    headers = re.findall(r"^\[(\d\d:\d\d:\d\d\.\d{3}) - (\d\d:\d\d:\d\d\.\d{3})\] (.+)$", txt, flags=re.MULTILINE)
    assert headers and {h[2] for h in headers} == {"Diane (SPEAKER_1)", "SPEAKER_2"}
    assert [_seconds(h[0]) for h in headers] == sorted(_seconds(h[0]) for h in headers)
    md = first["md"].decode()
    assert md.startswith("# Transcript: sample\n") and "| SPEAKER\\_1 |" not in md and "| SPEAKER_1 | Diane |" in md
    assert "Diane in New Jersey" in md
