"""Figures and previews for the Snakemake report: speaker timeline, confidence histogram,
transcript preview. All deterministic: same inputs, same bytes (no timestamps in PNG metadata)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trax.jsonio import atomic_path, read_json
from trax.diarization.annotation import Turn, rttm_turns

#: PNG metadata matplotlib would otherwise fill with its version; dropping it keeps bytes stable
#: across matplotlib patch releases too.
PNG_METADATA = {"Software": None}
DPI = 100


def transcript_turns(transcript: Mapping[str, Any]) -> list[Turn]:
    """Transcript segments as turns, labelled by their speaker when the transcript has one."""
    segments = _segments(transcript)
    return [Turn(float(s["start"]), float(s["end"]), str(s.get("speaker") or "speech")) for s in segments]


def _segments(transcript: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Speaker utterances of a merged.json, else a transcript's segments (either may be empty)."""
    return transcript["utterances"] if "utterances" in transcript else transcript["segments"]


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


def timeline_png(turns: Sequence[Turn], duration: float, path: str | Path, title: str) -> None:
    """One row per speaker (in order of first speech), a bar per turn."""
    labels = list(dict.fromkeys(turn.speaker for turn in sorted(turns, key=lambda t: (t.start, t.speaker))))
    fig, ax = _figure(10, 1.0 + 0.45 * max(len(labels), 1))
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for row, label in enumerate(labels):
        spans = [(t.start, t.end - t.start) for t in turns if t.speaker == label]
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colors[row])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, max(len(labels), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_title(title if labels else f"{title}: no speech")
    ax.grid(axis="x", alpha=0.3)
    widest = max((len(label) for label in labels), default=0)
    _set_margins(fig, 10, 1.0 + 0.45 * max(len(labels), 1), left=0.25 + CHAR_IN * widest)
    _save(fig, path)


def confidence_png(probabilities: Sequence[float], path: str | Path, title: str) -> None:
    """Histogram of word probabilities (20 bins over 0..1)."""
    fig, ax = _figure(6, 3)
    ax.hist(probabilities, bins=20, range=(0.0, 1.0), color="C0", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("word probability")
    ax.set_ylabel("words")
    ax.set_title(f"{title}: {len(probabilities)} words" if probabilities else f"{title}: no words")
    _set_margins(fig, 6, 3, left=0.65)
    _save(fig, path)


def preview_html(transcript: Mapping[str, Any], path: str | Path, title: str, max_segments: int) -> None:
    """The first ``max_segments`` segments (or speaker utterances) as an HTML table."""
    segments = _segments(transcript)
    rows = []
    for segment in segments[:max_segments]:
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
    more = len(segments) - max_segments
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
    transcript = read_json(transcript_json)
    duration = float(read_json(audio_json)["audio"]["duration"])
    names = _display_names(transcript)
    turns = rttm_turns(rttm) if rttm else transcript_turns(transcript)
    turns = [Turn(t.start, t.end, names.get(t.speaker, t.speaker)) for t in turns]
    timeline_png(turns, duration, timeline, f"{sample_id}: {'speakers' if rttm else 'speech'}")
    segments = _segments(transcript)
    probabilities = [float(w["probability"]) for s in segments for w in s.get("words", [])]
    confidence_png(probabilities, confidence, f"{sample_id}: word confidence")
    shown = dict(transcript)
    if "utterances" in transcript:
        shown["utterances"] = [{**u, "speaker": names.get(u["speaker"], u["speaker"])} for u in transcript["utterances"]]
    preview_html(shown, preview, f"{sample_id}: transcript preview", max_segments)
