"""Figures and previews for the Snakemake report: speaker timeline, confidence histogram,
transcript preview. All deterministic: same inputs, same bytes (no timestamps in PNG metadata)."""

from __future__ import annotations

import html
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trax.jsonio import atomic_path, iter_json_list, read_json, read_json_head
from trax.diarization.annotation import Turn, rttm_turns

#: PNG metadata matplotlib would otherwise fill with its version; dropping it keeps bytes stable
#: across matplotlib patch releases too.
PNG_METADATA = {"Software": None}
DPI = 100
#: Width of the speaker timeline (its plot area is narrower: a pixel is at least duration / 1000 px).
TIMELINE_WIDTH_IN = 10


def _figure(width: float, height: float):
    """A figure and its axes without pyplot: pyplot's global figure registry is not thread-safe,
    and figures are drawn in threads of the Snakemake process (see trax.jobs)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    return fig, fig.subplots()


#: Fixed margins in inches instead of ``tight_layout``, which measured every text box and took a
#: third of the figures job. Roughly: one line of title on top, tick labels plus an axis label
#: below, and ~0.075 in per character of the widest y tick label (10 pt DejaVu Sans).
TOP_IN, BOTTOM_IN, RIGHT_IN, CHAR_IN = 0.35, 0.5, 0.15, 0.075


def _set_margins(fig, width: float, height: float, left: float) -> None:
    fig.subplots_adjust(left=left / width, right=1 - RIGHT_IN / width, top=1 - TOP_IN / height,
                        bottom=BOTTOM_IN / height)


def _save(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata=PNG_METADATA)


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


def timeline_png(turns: Sequence[Turn], duration: float, path: str | Path, title: str) -> None:
    """One row per speaker (in order of first speech), a bar per turn."""
    labels = list(dict.fromkeys(turn.speaker for turn in sorted(turns, key=lambda t: (t.start, t.speaker))))
    fig, ax = _figure(TIMELINE_WIDTH_IN, 1.0 + 0.45 * max(len(labels), 1))
    colors = [f"C{i % 10}" for i in range(len(labels))]
    pixel_s = max(duration, 1e-3) / (TIMELINE_WIDTH_IN * DPI)
    for row, label in enumerate(labels):
        spans = _visible_spans(sorted((t.start, t.end) for t in turns if t.speaker == label), pixel_s)
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colors[row])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, max(len(labels), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_title(title if labels else f"{title}: no speech")
    ax.grid(axis="x", alpha=0.3)
    widest = max((len(label) for label in labels), default=0)
    _set_margins(fig, TIMELINE_WIDTH_IN, 1.0 + 0.45 * max(len(labels), 1), left=0.25 + CHAR_IN * widest)
    _save(fig, path)


def confidence_png(probabilities: Sequence[float], path: str | Path, title: str) -> None:
    """Histogram of word probabilities (20 bins over 0..1)."""
    import numpy as np

    fig, ax = _figure(6, 3)
    # An array, not a sequence: matplotlib makes one small array per item of a plain sequence
    # (38,000 words at 4 hours: +30 MB).
    ax.hist(np.asarray(probabilities, dtype=np.float64), bins=20, range=(0.0, 1.0), color="C0", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("word probability")
    ax.set_ylabel("words")
    ax.set_title(f"{title}: {len(probabilities)} words" if probabilities else f"{title}: no words")
    _set_margins(fig, 6, 3, left=0.65)
    _save(fig, path)


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
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")


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
    # process, which must not grow with the recording (trax.jsonio).
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
    timeline_png(turns, duration, timeline, f"{sample_id}: {'speakers' if rttm else 'speech'}")
    confidence_png(probabilities, confidence, f"{sample_id}: word confidence")
    preview_html(shown, total, preview, f"{sample_id}: transcript preview")
