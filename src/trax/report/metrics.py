"""Per-file run metrics, the cross-file summary, and performance targets.

``metrics.json`` is the one output that is *meant* to change between runs: it holds wall-clock and
CPU times and memory, read from the ``benchmark:`` TSVs Snakemake writes for every job. Everything
else it reports (speakers, refined share, confidence) is read from the deterministic outputs.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trax
from trax.io.jsonio import iter_json_list, read_json, read_json_head

log = logging.getLogger(__name__)

#: Seconds in the reference recording the speed target talks about ("5 minutes end to end").
TARGET_RECORDING_S = 300.0
DIGITS = 3


@dataclass(frozen=True)
class StageMetrics:
    """One job's cost, from its Snakemake benchmark TSV.

    Attributes:
        wall_s: Wall-clock seconds of the job (column ``s``).
        cpu_s: User + system CPU seconds of the job's processes (``cpu_time``).
        max_rss_mb: Peak resident memory of the job's processes in MB (``max_rss``). Work the model
            server does on the job's behalf is counted in the server's own peak, not here.
        rtf: Real-time factor, ``wall_s`` / audio duration.
    """

    wall_s: float
    cpu_s: float
    max_rss_mb: float
    rtf: float


def read_benchmark(path: str | Path, duration_s: float) -> StageMetrics:
    """Read a Snakemake benchmark TSV (the last row, when ``repeat()`` wrote several)."""
    import pandas as pd

    row = pd.read_csv(path, sep="\t").iloc[-1]

    def number(column: str) -> float:
        value = row.get(column)
        return 0.0 if value is None or pd.isna(value) or value == "-" else float(value)

    wall = number("s")
    return StageMetrics(
        wall_s=round(wall, DIGITS),
        cpu_s=round(number("cpu_time"), DIGITS),
        max_rss_mb=round(number("max_rss"), 1),
        rtf=round(wall / duration_s, 4) if duration_s > 0 else 0.0,
    )


def _segments(transcript_json: str) -> Iterator[Mapping[str, Any]]:
    """A transcript's segments, read one at a time: metrics run in the Snakemake process, which must
    not grow with the recording (trax.io.jsonio)."""
    return iter_json_list(transcript_json, "segments")


def share_words_refined(segments: Iterable[Mapping[str, Any]]) -> float:
    """Share of words that lie in segments whose re-decoded text the refine stage accepted."""
    total = changed = 0
    for segment in segments:
        count = len(segment.get("words", []))
        total += count
        changed += count if segment.get("refinement", {}).get("refined") else 0
    return round(changed / total, 4) if total else 0.0


def file_metrics(
    sample_id: str,
    audio_json: str,
    transcript_json: str,
    benchmarks: Mapping[str, str],
    refined_json: str | None = None,
    diarization_json: str | None = None,
    server: Mapping[str, Any] | None = None,
    merged_json: str | None = None,
) -> dict[str, Any]:
    """Collect ``metrics.json`` for one recording.

    Args:
        sample_id: The recording's id.
        audio_json: ``audio.json`` from normalize (duration).
        transcript_json: The final transcript (confidence and word counts).
        benchmarks: Stage name -> benchmark TSV of that stage's job for this recording.
        refined_json: ``transcript.refined.json`` when the DAG has a refine stage.
        diarization_json: ``diarization.json`` when the DAG has a diarize stage.
        server: The model server's ``stats`` reply when the server did the model work.
        merged_json: ``merged.json``, for its quality estimates (:func:`quality_summary`).

    ``wall_s`` sums the stages, so it is an upper bound of the end-to-end time for this file when
    stages (diarization and transcription) ran side by side.
    """
    duration = float(read_json(audio_json)["audio"]["duration"])
    stages = {name: read_benchmark(path, duration) for name, path in benchmarks.items()}
    wall = sum(stage.wall_s for stage in stages.values())
    elapsed = elapsed_s(benchmarks, stages)
    confidences = array("d", (float(word["probability"]) for segment in _segments(transcript_json)
                              for word in segment.get("words", [])))
    peak_job_rss = max((stage.max_rss_mb for stage in stages.values()), default=0.0)
    server_peak = float(server["peak_rss_mb"]) if server else 0.0
    return {
        "sample_id": sample_id,
        "trax_version": trax.__version__,
        "duration_s": round(duration, DIGITS),
        "wall_s": round(wall, DIGITS),
        "elapsed_s": round(elapsed, DIGITS),
        "cpu_s": round(sum(stage.cpu_s for stage in stages.values()), DIGITS),
        "rtf": round(wall / duration, 4) if duration > 0 else 0.0,
        "wall_s_per_5min": round(wall / duration * TARGET_RECORDING_S, DIGITS) if duration > 0 else 0.0,
        # Jobs and the server run at the same time, so their peaks add up in the worst case.
        "peak_rss_mb": round(peak_job_rss + server_peak, 1),
        "stages": {name: asdict(stage) for name, stage in stages.items()},
        "model_server": _server_summary(server),
        "model_loads": _model_loads(server, stages),
        "num_speakers": (read_json_head(diarization_json, {"turns", "speakers"})["num_speakers"]
                         if diarization_json else None),
        "share_words_refined": share_words_refined(_segments(refined_json)) if refined_json else None,
        **language_summary(read_json_head(transcript_json, {"segments", "dropped_segments"})),
        "words": len(confidences),
        "mean_confidence": round(statistics.fmean(confidences), 4) if confidences else None,
        **quality_summary({**read_json_head(merged_json, {"utterances"}),
                           "utterances": iter_json_list(merged_json, "utterances")} if merged_json else None),
    }


def language_summary(transcript: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript's language, its probability (null when not identified), how it was decided
    and the runner-ups (``language_detection``; older transcripts have none)."""
    detection = transcript.get("language_detection") or {}
    return {
        "language": transcript.get("language"),
        "language_probability": transcript.get("language_probability"),
        "language_method": detection.get("method"),
        "language_candidates": detection.get("candidates") or [],
        "language_uncertain": bool(detection.get("uncertain")),
    }


def elapsed_s(benchmarks: Mapping[str, str | Path], stages: Mapping[str, StageMetrics]) -> float:
    """Seconds from the start of the recording's first job to the end of its last one.

    Snakemake writes a job's benchmark TSV when the job ends, so the file's modification time
    is the job's end and that minus the job's wall time its start. Unlike the sum of the jobs'
    times, this counts diarization and transcription once when they ran side by side.
    """
    ends = {name: os.path.getmtime(path) for name, path in benchmarks.items()}
    if not ends:
        return 0.0
    first_start = min(end - stages[name].wall_s for name, end in ends.items())
    return max(0.0, max(ends.values()) - first_start)


def quality_summary(merged: Mapping[str, Any] | None) -> dict[str, Any]:
    """The quality figures of ``merged.json`` that the summary and the report show, with the
    utterances flagged for review (times, text, reason); all None/empty without it."""
    quality = (merged or {}).get("quality") or {}
    speakers = [speaker.get("name") or speaker["id"] for speaker in (merged or {}).get("speakers", [])]
    flagged = [{"id": u["id"], "start": u["start"], "end": u["end"], "speaker": u["speaker"], "text": u["text"],
                "reason": u["review_reason"]}
               for u in (merged or {}).get("utterances", []) if u.get("needs_review")]
    return {
        "language": (merged or {}).get("language"),
        "speakers": speakers,
        "estimated_wer": quality.get("estimated_wer"),
        "estimated_wer_interval": quality.get("interval"),
        "diarization_confidence": quality.get("diarization_confidence"),
        "needs_review": bool(quality.get("needs_review")),
        "review_reasons": list(quality.get("reasons") or []),
        "flagged_utterances": flagged,
    }


def _server_summary(server: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not server:
        return None
    return {
        "pid": server["pid"],
        "host": server.get("host"),
        "peak_rss_mb": server["peak_rss_mb"],
        "requests": server["requests"],
        "models": [{key: model.get(key) for key in ("key", "loads", "hits", "resident_mb")} for model in server["models"]],
    }


def _model_loads(server: Mapping[str, Any] | None, stages: Mapping[str, StageMetrics]) -> int:
    """Model loads behind this file: the server's total (shared by the whole batch), or one per
    model stage when each job loaded its model itself."""
    if server:
        return sum(int(model["loads"]) for model in server["models"])
    from_stages = {"transcribe_fast", "refine", "diarize"}
    return sum(1 for name in stages if name in from_stages)


# --- summary across files ------------------------------------------------------------------------

#: Per-file columns of summary.tsv, in order (stage columns follow).
SUMMARY_COLUMNS = ["sample_id", "duration_s", "wall_s", "cpu_s", "rtf", "wall_s_per_5min", "peak_rss_mb",
                   "model_loads", "num_speakers", "share_words_refined", "language", "language_probability",
                   "language_method", "words", "mean_confidence",
                   "estimated_wer", "diarization_confidence", "needs_review"]
#: Columns that are labels or counts, not measurements to aggregate.
NOT_AGGREGATED = {"sample_id", "language", "language_method"}


def summary_rows(metrics: Sequence[Mapping[str, Any]], evaluations: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per file: metrics, per-stage wall time and RTF, and WER/DER when evaluated."""
    rows = []
    for item in metrics:
        row = {column: item.get(column) for column in SUMMARY_COLUMNS}
        for stage, values in item["stages"].items():
            row[f"{stage}_wall_s"] = values["wall_s"]
            row[f"{stage}_rtf"] = values["rtf"]
        row["review_reasons"] = "; ".join(item.get("review_reasons") or [])
        evaluation = evaluations.get(item["sample_id"])
        if evaluation:
            final = (evaluation.get("wer") or {}).get("final")
            row["wer"] = final["wer"] if final else None
            row["der"] = evaluation["der"]["der"] if evaluation.get("der") else None
        rows.append(row)
    return rows


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """count, mean, median, min, max and sample stdev of every numeric column."""
    columns = [column for row in rows for column in row if column not in NOT_AGGREGATED]
    table = []
    for column in dict.fromkeys(columns):
        values = [float(row[column]) for row in rows if isinstance(row.get(column), (int, float))
                  and not isinstance(row.get(column), bool) and not math.isnan(row[column])]
        if not values:
            continue
        table.append({
            "metric": column,
            "count": len(values),
            "mean": round(statistics.fmean(values), 4),
            "median": round(statistics.median(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        })
    return table


@dataclass(frozen=True)
class Target:
    """A performance target from config, checked against the worst qualifying file.

    Attributes:
        name: What the target promises, e.g. "5-minute recording end to end under 25 s".
        metric: A summary.tsv column, e.g. ``wall_s_per_5min`` or ``peak_rss_mb``.
        max: The largest value that passes.
        min_duration_s: Only files at least this long are checked, so a speed target about long
            recordings is not failed by a 2-second clip whose fixed start-up cost dominates.
    """

    name: str
    metric: str
    max: float
    min_duration_s: float = 0.0


def check_targets(rows: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """A pass/fail line per target: the worst value over the files the target applies to."""
    lines = []
    for target in targets:
        values = [(float(row[target.metric]), row["sample_id"]) for row in rows
                  if row.get(target.metric) is not None and float(row["duration_s"]) >= target.min_duration_s]
        worst, worst_file = max(values) if values else (None, None)
        lines.append({
            "target": target.name,
            "metric": target.metric,
            "max": target.max,
            "files": len(values),
            "worst": worst,
            "worst_file": worst_file,
            "result": "n/a" if worst is None else ("pass" if worst <= target.max else "fail"),
        })
    return lines


def evaluation_rows(evaluations: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-file WER/DER plus a pooled line: corpus WER (errors summed before dividing) and total DER."""
    rows = []
    totals = {"errors": 0, "words": 0, "der_errors": 0.0, "der_total": 0.0}
    for sample_id, evaluation in sorted(evaluations.items()):
        wer = (evaluation.get("wer") or {}).get("final")
        der = evaluation.get("der")
        if wer:
            totals["errors"] += wer["substitutions"] + wer["deletions"] + wer["insertions"]
            totals["words"] += wer["reference_words"]
        if der:
            totals["der_errors"] += der["false_alarm"] + der["missed_detection"] + der["confusion"]
            totals["der_total"] += der["total"]
        estimate = evaluation.get("estimate") or {}
        rows.append({"sample_id": sample_id, "wer": wer["wer"] if wer else None,
                     "estimated_wer": estimate.get("wer"),
                     "reference_words": wer["reference_words"] if wer else None,
                     "der": der["der"] if der else None, "estimated_der": estimate.get("der"),
                     "scored_s": der["total"] if der else None})
    rows.append({
        "sample_id": "ALL (corpus WER / total DER)",
        "wer": round(totals["errors"] / totals["words"], 4) if totals["words"] else None,
        "reference_words": totals["words"] or None,
        "der": round(totals["der_errors"] / totals["der_total"], 4) if totals["der_total"] else None,
        "scored_s": round(totals["der_total"], 3) if totals["der_total"] else None,
    })
    return rows


def _clock(seconds: float) -> str:
    minutes, rest = divmod(float(seconds), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def review_rows(metrics: Sequence[Mapping[str, Any]], every_flag: bool = False) -> list[dict[str, Any]]:
    """Files to review first, worst first, one row per flagged utterance (a flagged file without
    flagged utterances gets one row). Worst = highest estimated WER, then lowest diarization
    confidence; files that need no review are left out, unless ``every_flag``: then files that are
    fine overall but have flagged utterances follow them (summary.html lists every flag)."""
    def badness(item: Mapping[str, Any]) -> tuple:
        wer = item.get("estimated_wer")
        confidence = item.get("diarization_confidence")
        return (-(wer if wer is not None else 0.0), confidence if confidence is not None else 1.0, item["sample_id"])

    rows = []
    def listed(item: Mapping[str, Any]) -> tuple:
        return (not item.get("needs_review"), *badness(item))

    chosen = [m for m in metrics if m.get("needs_review") or (every_flag and m.get("flagged_utterances"))]
    for rank, item in enumerate(sorted(chosen, key=listed), 1):
        head = {"rank": rank, "sample_id": item["sample_id"], "estimated_wer": item.get("estimated_wer"),
                "diarization_confidence": item.get("diarization_confidence"),
                "reasons": "; ".join(item.get("review_reasons") or [])}
        utterances = item.get("flagged_utterances") or [None]
        for utterance in utterances:
            rows.append({**head, "utterance": utterance["id"] if utterance else None,
                         "time": f"{_clock(utterance['start'])}-{_clock(utterance['end'])}" if utterance else None,
                         "speaker": utterance["speaker"] if utterance else None,
                         "text": utterance["text"] if utterance else None,
                         "utterance_reason": utterance["reason"] if utterance else None})
    return rows


def write_tsv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Write rows as a TSV atomically (columns in first-seen order; empty cells for None)."""
    import pandas as pd

    from trax.io.jsonio import atomic_path

    columns = list(dict.fromkeys(column for row in rows for column in row))
    frame = pd.DataFrame(list(rows), columns=columns)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="")


def write_file_metrics(sample_id: str, inputs: Mapping[str, str], stages: Sequence[str], output_path: str,
                       server: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect and write ``metrics.json`` from a metrics job's named inputs; ``server`` is the model
    server's ``stats`` reply (None without one), fetched by the runtime."""
    from trax.io.jsonio import write_json_atomic

    result = file_metrics(
        sample_id=sample_id,
        audio_json=inputs["audio"],
        transcript_json=inputs["transcript"],
        benchmarks={stage: inputs[f"benchmark_{stage}"] for stage in stages},
        refined_json=inputs.get("refined"),
        diarization_json=inputs.get("diarization"),
        server=server,
        merged_json=inputs.get("merged"),
    )
    write_json_atomic(output_path, result, schema="metrics")
    from trax import console

    console.line(done_line(result))
    return result


def done_line(metrics: Mapping[str, Any]) -> str:
    """The one console line at the end of a recording: duration, wall time, speed, speakers, words.

    Wall time is ``metrics.json``'s ``elapsed_s`` (first job's start to last job's end; the sum
    of the jobs, ``wall_s``, counted diarization and transcription twice when they ran side by
    side); speed is audio seconds per wall second.
    """
    from trax.progress import clock

    duration, wall = float(metrics["duration_s"]), float(metrics["elapsed_s"])
    speed = f"{duration / wall:.1f}x real time" if wall > 0 else "instant"
    speakers = metrics.get("num_speakers")
    who = f", {speakers} speaker{'s' if speakers != 1 else ''}" if speakers is not None else ""
    return (f"trax: {metrics['sample_id']}: done: {clock(duration)} of audio in {clock(wall)} ({speed}){who}, "
            f"{metrics['words']} words")


def write_summary(metrics_paths: Sequence[str], evaluation_paths: Sequence[str], targets: Sequence[Mapping[str, Any]],
                  outputs: Mapping[str, str]) -> None:
    """Write the cross-file tables (TSV for tools, one HTML page for the report).

    Args:
        metrics_paths: Every recording's ``metrics.json``.
        evaluation_paths: The ``evaluation.json`` of recordings with references.
        targets: The config's ``report.targets``.
        outputs: The summary rule's outputs: ``review`` (files to review first, worst first, with
            their flagged utterances: :func:`review_rows`; the report shows it first),
            ``summary``, ``aggregate``, ``targets`` and ``evaluation`` TSVs, and ``html``.
    """
    metrics = [read_json(path) for path in metrics_paths]
    evaluations = {(e := read_json(path))["sample_id"]: e for path in evaluation_paths}
    rows = summary_rows(metrics, evaluations)
    review = review_rows(metrics)
    # Each recording's folder, relative to the page: its review page and transcript sit there.
    folders = {item["sample_id"]: Path(os.path.relpath(Path(path).parent, Path(outputs["html"]).parent)).as_posix()
               for item, path in zip(metrics, metrics_paths)}
    tables = {
        "Review first (worst first, with the utterances flagged)": (review, outputs["review"]),
        "Per-file metrics": (rows, outputs["summary"]),
        "Aggregate over files": (aggregate(rows), outputs["aggregate"]),
        "Performance targets": (check_targets(rows, [Target(**t) for t in targets]), outputs["targets"]),
        "Evaluation against references": (evaluation_rows(evaluations) if evaluations else [], outputs["evaluation"]),
    }
    for table_rows, path in tables.values():
        write_tsv(table_rows, path)
    raw = {title: table_rows for title, (table_rows, _) in tables.items()}
    _write_html(overview_html(metrics, folders) + "\n" + review_html(review_rows(metrics, every_flag=True), folders),
                raw, outputs["html"])


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _link(href: str, text: str) -> str:
    import html
    from urllib.parse import quote

    return f'<a href="{html.escape(quote(href, safe="/#"))}">{html.escape(text)}</a>'


def overview_html(metrics: Sequence[Mapping[str, Any]], folders: Mapping[str, str]) -> str:
    """summary.html's first table, one readable row per recording: duration, language, speakers by
    name, words, estimated WER, review flag, and links to its review page and transcript
    (``folders``: sample id -> its results folder relative to the page)."""
    import html

    from trax.progress import clock

    head = ("recording", "duration", "language", "speakers", "words", "estimated WER", "review", "open")
    lines = ["<h2>Recordings</h2>", '<table class="overview"><thead><tr>'
             + "".join(f"<th>{name}</th>" for name in head) + "</tr></thead><tbody>"]
    for item in sorted(metrics, key=lambda m: m["sample_id"]):
        folder = folders[item["sample_id"]]
        flagged = len(item.get("flagged_utterances") or [])
        review = ("needs review" + (f" ({flagged} utterance{'s' if flagged != 1 else ''})" if flagged else "")
                  if item.get("needs_review") else (f"{flagged} utterance{'s' if flagged != 1 else ''}" if flagged else "ok"))
        cells = [html.escape(item["sample_id"]), clock(float(item["duration_s"])), html.escape(item.get("language") or ""),
                 html.escape(", ".join(item.get("speakers") or [])), str(item["words"]),
                 _percent(item.get("estimated_wer")), html.escape(review),
                 _link(f"{folder}/review.html", "review page") + " · " + _link(f"{folder}/transcript.txt", "transcript")]
        flag = ' class="flagged"' if item.get("needs_review") else ""
        lines.append(f"<tr{flag}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def review_html(rows: Sequence[Mapping[str, Any]], folders: Mapping[str, str]) -> str:
    """The review list (:func:`review_rows`) with each flagged utterance linked to its place on
    the recording's review page (``review.html#u<id>``)."""
    import html

    if not rows:
        return "<h2>To review</h2>\n<p>Nothing is flagged for review.</p>"
    lines = ["<h2>To review (worst first)</h2>", '<table class="overview"><thead><tr><th>#</th><th>recording</th>'
             "<th>time</th><th>speaker</th><th>text</th><th>why</th></tr></thead><tbody>"]
    for row in rows:
        page = f"{folders[row['sample_id']]}/review.html"
        time = (_link(f"{page}#u{row['utterance']}", row["time"]) if row.get("utterance") is not None
                else _link(page, "whole recording"))
        reason = row.get("utterance_reason") or row.get("reasons") or ""
        cells = [str(row["rank"]), html.escape(row["sample_id"]), time, html.escape(row.get("speaker") or ""),
                 html.escape(row.get("text") or ""), html.escape(reason)]
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


#: summary.html's style: readable tables first; the raw metric tables scroll sideways in their own box.
SUMMARY_CSS = ("body{font-family:system-ui,sans-serif;margin:12px;max-width:1200px} "
               "table{border-collapse:collapse} td,th{padding:3px 8px;border-bottom:1px solid #ddd;vertical-align:top} "
               "table.overview th{text-align:left;background:#f3f3f3} table.overview td:nth-child(5){max-width:40em} "
               "tr.flagged{background:#fff3cd} .raw{overflow-x:auto;max-width:100%} "
               "table.trax td,table.trax th{text-align:right;white-space:nowrap}")


def _write_html(overview: str, tables: Mapping[str, Sequence[Mapping[str, Any]]], path: str) -> None:
    import html

    import pandas as pd

    from trax.io.jsonio import atomic_path

    sections = [overview, "<h2>Raw tables</h2>"]
    for title, rows in tables.items():
        frame = pd.DataFrame(list(rows))
        frame = frame.astype(object).where(frame.notna(), "")  # None/NaN cells show empty
        body = frame.to_html(index=False, na_rep="", border=0, classes="trax") if rows else "<p>(none)</p>"
        sections.append(f"<h3>{html.escape(title)}</h3>\n<div class=\"raw\">{body}</div>")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Trax summary</title>"
            f"<style>{SUMMARY_CSS}</style></head><body>\n<h1>Trax summary</h1>\n" + "\n".join(sections)
            + "\n</body></html>\n")
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
