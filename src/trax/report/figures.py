"""Figures and previews for the Snakemake report: speaker timeline and confidence histogram (SVG),
transcript preview (HTML). All deterministic: same inputs, same bytes."""

from __future__ import annotations

import html
import math
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trax.io.jsonio import iter_json_list, read_json, read_json_head, write_text_atomic
from trax.io.annotation import Turn, rttm_turns

#: Palette of the speaker rows (matplotlib's tab10, the colours these figures had as PNGs).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
#: Width of the speaker timeline in px (its plot area is narrower: a pixel is at least duration / 1000 px).
TIMELINE_WIDTH = 1000
#: Margins in px: title line on top, tick labels plus an axis label below; the left margin grows by
#: CHAR_PX per character of the widest row label (12 px sans-serif).
TOP, BOTTOM, RIGHT, CHAR_PX = 32, 44, 16, 7.5
ROW_PX = 32
#: Bins of the confidence histogram over 0..1.
CONFIDENCE_BINS = 20
FONT = 'font-family="DejaVu Sans, Arial, sans-serif" font-size="12"'


def _num(value: float) -> str:
    """A coordinate with two decimals and no trailing zeros: stable bytes, small files."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _ticks(high: float, count: int = 8) -> list[float]:
    """Round tick values 0, step, 2*step ... <= ``high``, with a 1/2/5 x 10^k step giving at most
    ``count`` + 1 ticks."""
    if high <= 0:
        return [0.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(high / step + 1e-9) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:g}"


class _Svg:
    """A tiny SVG writer: the report figures are bars, lines and text, and drawing them directly is
    ~100x cheaper than matplotlib (its import alone took 0.7 s of every workflow run)."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.items: list[str] = []

    def rect(self, x: float, y: float, width: float, height: float, fill: str, extra: str = "") -> None:
        self.items.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(width)}" height="{_num(height)}" '
                          f'fill="{fill}"{extra}/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000", opacity: float = 1.0) -> None:
        alpha = "" if opacity == 1.0 else f' stroke-opacity="{_num(opacity)}"'
        self.items.append(f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" stroke="{stroke}"{alpha}/>')

    def text(self, x: float, y: float, value: str, anchor: str = "middle", extra: str = "") -> None:
        self.items.append(f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}"{extra}>{html.escape(value)}</text>')

    def write(self, path: str | Path, title: str) -> None:
        body = "\n".join(self.items)
        page = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(self.width)}" height="{_num(self.height)}" '
                f'viewBox="0 0 {_num(self.width)} {_num(self.height)}" {FONT}>\n'
                f'<title>{html.escape(title)}</title>\n<rect width="100%" height="100%" fill="#fff"/>\n'
                f'{body}\n</svg>\n')
        write_text_atomic(path, page)


def _axes(svg: _Svg, left: float, title: str, x_ticks: list[float], x_scale: float, x_label: str) -> None:
    """Frame, title, x ticks with light vertical grid lines, and the x axis label."""
    right, bottom = svg.width - RIGHT, svg.height - BOTTOM
    svg.text((left + right) / 2, TOP - 12, title, extra=' font-size="13"')
    for value in x_ticks:
        x = left + value * x_scale
        svg.line(x, TOP, x, bottom, "#000", 0.15)
        svg.line(x, bottom, x, bottom + 4)
        svg.text(x, bottom + 17, _tick_label(value))
    svg.text((left + right) / 2, svg.height - 8, x_label)
    svg.rect(left, TOP, right - left, bottom - TOP, "none", ' stroke="#000"')


def _visible_spans(spans: Sequence[tuple[float, float]], pixel_s: float) -> list[tuple[float, float]]:
    """(start, width) bars of sorted (start, end) spans, joined across gaps narrower than a pixel:
    the picture is the same, and a 4-hour recording's thousands of turns become at most one bar
    per pixel, so drawing takes the same memory whatever the length."""
    bars: list[list[float]] = []
    for start, end in spans:
        if bars and start - bars[-1][1] < pixel_s:
            bars[-1][1] = max(bars[-1][1], end)
        else:
            bars.append([start, end])
    return [(start, end - start) for start, end in bars]


def timeline_svg(turns: Sequence[Turn], duration: float, path: str | Path, title: str) -> None:
    """One row per speaker (in order of first speech), a bar per turn."""
    labels = list(dict.fromkeys(turn.speaker for turn in sorted(turns, key=lambda t: (t.start, t.speaker))))
    left = 20 + CHAR_PX * max((len(label) for label in labels), default=0)
    svg = _Svg(TIMELINE_WIDTH, TOP + BOTTOM + ROW_PX * max(len(labels), 1))
    duration = max(duration, 1e-3)
    scale = (svg.width - RIGHT - left) / duration
    _axes(svg, left, title if labels else f"{title}: no speech", _ticks(duration), scale, "time (s)")
    for row, label in enumerate(labels):
        top = TOP + ROW_PX * row
        color = COLORS[row % len(COLORS)]
        for start, width in _visible_spans(sorted((t.start, t.end) for t in turns if t.speaker == label), 1 / scale):
            svg.rect(left + start * scale, top + 0.1 * ROW_PX, max(width * scale, 0.5), 0.8 * ROW_PX, color)
        svg.line(left - 4, top + ROW_PX / 2, left, top + ROW_PX / 2)
        svg.text(left - 7, top + ROW_PX / 2 + 4, label, anchor="end")
    svg.write(path, title)


def confidence_svg(probabilities: Sequence[float], path: str | Path, title: str) -> None:
    """Histogram of word probabilities (:data:`CONFIDENCE_BINS` bins over 0..1)."""
    counts = [0] * CONFIDENCE_BINS
    for probability in probabilities:
        counts[min(max(int(probability * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)] += 1
    svg = _Svg(600, 300)
    left = 64.0
    plot_w, plot_h = svg.width - RIGHT - left, svg.height - BOTTOM - TOP
    label = f"{title}: {len(probabilities)} words" if probabilities else f"{title}: no words"
    _axes(svg, left, label, [i / 5 for i in range(6)], plot_w, "word probability")
    y_ticks = _ticks(max(counts), 5)
    y_scale = plot_h / max(y_ticks[-1], max(counts), 1)
    for value in y_ticks:
        y = svg.height - BOTTOM - value * y_scale
        svg.line(left - 4, y, left, y)
        svg.text(left - 7, y + 4, _tick_label(value), anchor="end")
    svg.text(16, TOP + plot_h / 2, "words", extra=f' transform="rotate(-90 16 {_num(TOP + plot_h / 2)})"')
    width = plot_w / CONFIDENCE_BINS
    for index, count in enumerate(counts):
        if count:
            svg.rect(left + index * width, svg.height - BOTTOM - count * y_scale, width, count * y_scale, COLORS[0],
                     ' stroke="#fff"')
    svg.write(path, title)


def preview_html(segments: Sequence[Mapping[str, Any]], total: int, path: str | Path, title: str) -> None:
    """The first segments (or speaker utterances) of a transcript of ``total`` as an HTML table."""
    rows = []
    for segment in segments:
        words = segment.get("words", [])
        confidence = sum(float(w["probability"]) for w in words) / len(words) if words else None
        rows.append(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                f"{float(segment['start']):.2f}–{float(segment['end']):.2f}",
                html.escape(str(segment.get("speaker") or "")),
                html.escape(segment["text"].strip()),
                "" if confidence is None else f"{confidence:.2f}",
            )
        )
    more = total - len(segments)
    note = f"<p>… {more} more segments in the full transcript.</p>" if more > 0 else ""
    body = "\n".join(rows) or '<tr><td colspan="4">(no speech)</td></tr>'
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td{{padding:2px 8px;vertical-align:top}} td:first-child{{white-space:nowrap}}</style>
</head><body><h2>{html.escape(title)}</h2>
<table><thead><tr><th>time (s)</th><th>speaker</th><th>text</th><th>confidence</th></tr></thead>
<tbody>
{body}
</tbody></table>{note}</body></html>
"""
    write_text_atomic(path, page)


def _display_names(transcript: Mapping[str, Any]) -> dict[str, str]:
    """Speaker id and diarization label -> what to show (the sheet's name, else the id)."""
    names = {}
    for speaker in transcript.get("speakers", []):
        shown = speaker.get("name") or speaker["id"]
        names[speaker["id"]] = shown
        if speaker.get("label"):
            names[speaker["label"]] = shown
    return names


def make_figures(sample_id: str, transcript_json: str, audio_json: str, rttm: str | None,
                 timeline: str, confidence: str, preview: str, max_segments: int) -> None:
    """All report figures of one recording.

    ``transcript_json`` is the speaker-attributed ``merged.json`` when the workflow has a merge
    stage (utterances with speakers), else a transcript (segments).
    """
    # One pass over the utterances (or segments), one at a time: figures are drawn in the Snakemake
    # process, which must not grow with the recording (trax.io.jsonio).
    head = read_json_head(transcript_json, {"utterances", "segments"})
    key = "utterances" if "speakers" in head else "segments"  # merged.json always has speakers
    names = _display_names(head)
    duration = float(read_json(audio_json)["audio"]["duration"])
    speech: list[Turn] = []
    probabilities = array("d")
    shown: list[Mapping[str, Any]] = []
    total = 0
    for segment in iter_json_list(transcript_json, key):
        probabilities.extend(float(w["probability"]) for w in segment.get("words", []))
        if not rttm:
            speech.append(Turn(float(segment["start"]), float(segment["end"]), str(segment.get("speaker") or "speech")))
        if total < max_segments:
            shown.append({**segment, "speaker": names.get(segment["speaker"], segment["speaker"])}
                         if key == "utterances" else segment)
        total += 1
    turns = rttm_turns(rttm) if rttm else speech
    turns = [Turn(t.start, t.end, names.get(t.speaker, t.speaker)) for t in turns]
    timeline_svg(turns, duration, timeline, f"{sample_id}: {'speakers' if rttm else 'speech'}")
    confidence_svg(probabilities, confidence, f"{sample_id}: word confidence")
    preview_html(shown, total, preview, f"{sample_id}: transcript preview")
