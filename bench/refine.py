"""Refinement (combine mode): dev WER of the fast pass, the second model alone and the combinations.

Usage::

    .venv/bin/python bench/refine.py [--repeats 1] [--no-end-to-end] [--fit] [--second-beams 1]

One table from one run. Dev category-a clips (trax.quality.benchdata.wer_items, 454 words): fast
pass (the workflow's transcribe_fast), embedded:base decoding every VAD chunk (beam 5, English),
tiny.en beam 5 the same way (third opinion); combinations (trax.asr.refine.combine_into) per
variant: all chunks vs doubtful chunks only, margins, calibration, two vs three opinions. Then the
5-minute recording (common.build_recording) cold end to end with refine off and on (median of
--repeats), and every dev item whose errors changed under the default. ``--fit`` also prints the
Platt fits of trax.asr.combine.CALIBRATIONS (agreement on columbia + AMI excerpts, not dev items).

Rows and columns in detail: bench/README.md, section "refine.py".
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from common import (
    OUT,
    build_recording,
    normalized,
    snakemake_cpu,
    stop_server,
    workflow_config,
)

from trax.asr.combine import agreement, fit_platt, token
from trax.asr.models import resolve_whisper
from trax.asr.refine import RefineOptions, _unchosen, combine_into, join_words
from trax.asr.second_opinion import decode_chunks
from trax.asr.transcribe import TranscribeOptions, load_whisper, transcribe_wav
from trax.process import pin_blas_threads
from trax.quality.benchdata import benchdata_dir, der_items, wer_items
from trax.quality.evaluation import corpus_wer


def fast_words(transcript: dict) -> list[dict]:
    return [w for s in transcript["segments"] for w in s["words"]]


def combined(fast: dict, second: list[dict], chunks: list, settings: dict, third: list[dict] | None) -> tuple[str, int]:
    """(text, words taken from the second decode) of one combination of decodes already made."""
    options = RefineOptions.from_config({**workflow_config()["refine"], **settings})
    if options.chunks == "doubtful":  # the chunks refine would decode: a fast word below the threshold in them
        words = fast_words(fast)
        chunks = [dataclasses.replace(c, decoded=any(c.start <= (w["start"] + w["end"]) / 2 <= c.end
                                                     and w["probability"] < options.word_threshold for w in words))
                  for c in chunks]
        second = [w for w in second if any(c.decoded and c.start <= (w["start"] + w["end"]) / 2 <= c.end
                                           for c in chunks)]
    segments = [dict(s, words=[dict(w) for w in s["words"]]) for s in fast["segments"]]
    record = combine_into(segments, [_unchosen(s) for s in segments], second, chunks,
                          fast["provenance"]["models"]["asr"]["spec"], options.model, options, set(), third)
    taken = sum(len(c["second"]["text"].split()) for c in record["changes"] if c["chosen"] == "second")
    return " ".join(s["text"] for s in segments if s["text"]), taken


def errors(reference: str, text: str) -> int:
    result = corpus_wer([reference], [text])
    return result.substitutions + result.deletions + result.insertions


def end_to_end(settings: dict, repeats: int) -> tuple[float, float]:
    """Median cold wall time and CPU seconds (:func:`common.snakemake_cpu`) of the workflow on the
    5-minute recording with ``refine`` ``settings``."""
    recording = build_recording(OUT / "refine" / "five_minutes.wav")
    times, cpus = [], []
    for _ in range(repeats):
        workdir = Path(tempfile.mkdtemp(prefix="trax-bench-refine-e2e-"))
        config = {**workflow_config(), "inputs": str(recording)}
        config["refine"] = {**config["refine"], **settings}
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        try:
            wall, cpu = snakemake_cpu(workdir, workdir / "config.yaml", 2)
            times.append(wall)
            cpus.append(cpu)
        finally:
            stop_server(workdir, check=False)
    return statistics.median(times), statistics.median(cpus)


def end_to_end_rows(repeats: int) -> list[list[str]]:
    """The 5-minute file cold end to end with refine off, on (all chunks) and on (doubtful chunks):
    label, wall s, times the off run, CPU s, CPU s per core (the wall time's floor on 2 cores)."""
    rows = []
    off = None
    for label, settings in (("refine off", {"enabled": False}), ("refine on (all chunks)", {"enabled": True}),
                            ("refine on (doubtful chunks)", {"enabled": True, "chunks": "doubtful"})):
        wall, cpu = end_to_end(settings, repeats)
        off = off or wall
        rows.append([f"5-min file end to end, {label}", f"{wall:.1f}", f"{wall / off:.2f}x", f"{cpu:.1f}",
                     f"{cpu / 2:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="cold end-to-end runs per setting (median)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the 5-minute workflow runs")
    parser.add_argument("--only-end-to-end", action="store_true", help="only the 5-minute workflow runs")
    parser.add_argument("--fit", action="store_true", help="also print the agreement Platt fits (CALIBRATIONS)")
    parser.add_argument("--second-beams", type=int, nargs="*", default=[1],
                        help="extra rows: the second decode with these beam sizes (default config otherwise)")
    args = parser.parse_args()
    if args.only_end_to_end:
        _print([["variant", "wall s", "x off", "CPU s", "CPU s / 2 cores"], *end_to_end_rows(args.repeats)])
        return
    pin_blas_threads()

    items = wer_items()
    extra = [benchdata_dir() / "const-me-whisper/columbia.16k.wav", *(d.path for d in der_items())] if args.fit else []
    wavs = normalized([i.path for i in items] + extra, OUT / "refine" / "wav")
    fast_settings = workflow_config()["transcribe_fast"]
    fast_source = resolve_whisper(fast_settings["model"])
    fast_model = load_whisper(fast_source, TranscribeOptions.from_config(fast_settings))
    second_options = TranscribeOptions(model=RefineOptions().model, beam_size=RefineOptions().beam_size, language="en")
    second_model = load_whisper(resolve_whisper(second_options.model), second_options)
    third_options = TranscribeOptions(model=fast_settings["model"], beam_size=5, language="en")
    decodes, seconds, other_beams = {}, {"fast": 0.0, "second": 0.0, "third": 0.0}, {}
    for path, wav in wavs.items():
        started = time.perf_counter()
        fast = transcribe_wav(str(wav), path.stem, fast_settings, fast_model, fast_source)
        middle = time.perf_counter()
        second, chunks = decode_chunks(second_model, str(wav), second_options, None)
        end = time.perf_counter()
        third, _ = decode_chunks(fast_model, str(wav), third_options, None)
        seconds["fast"] += middle - started
        seconds["second"] += end - middle
        seconds["third"] += time.perf_counter() - end
        decodes[path] = (fast, second, chunks, third)
        for beam in args.second_beams:
            started = time.perf_counter()
            other_beams[beam, path] = decode_chunks(
                second_model, str(wav), dataclasses.replace(second_options, beam_size=beam), None)[0]
            seconds[f"second beam {beam}"] = seconds.get(f"second beam {beam}", 0.0) + time.perf_counter() - started

    references = [i.reference for i in items]
    variants = [
        ("combined (defaults)", {}, False),
        ("  margin 0.05", {"margin": 0.05}, False),
        ("  margin 0.1", {"margin": 0.1}, False),
        ("  calibration agreement", {"calibration": "agreement"}, False),
        ("  calibration agreement, margin 0.05", {"calibration": "agreement", "margin": 0.05}, False),
        ("  doubtful chunks only, t=0.5", {"chunks": "doubtful", "word_threshold": 0.5}, False),
        ("  doubtful chunks only, t=0.7", {"chunks": "doubtful", "word_threshold": 0.7}, False),
        ("  three opinions (+ tiny.en beam 5)", {}, True),
    ]
    fast_texts = [decodes[i.path][0]["text"] for i in items]
    total_words = sum(len(fast_words(decodes[i.path][0])) for i in items)
    rows = [_row("fast pass (tiny.en)", references, fast_texts, None, total_words),
            _row("second model alone (base, every chunk)", references,
                 [join_words(w["word"] for w in decodes[i.path][1]) for i in items], None, total_words),
            _row("third alone (tiny.en beam 5, every chunk)", references,
                 [join_words(w["word"] for w in decodes[i.path][3]) for i in items], None, total_words)]
    default_texts = []
    for label, settings, use_third in variants:
        results = [combined(decodes[i.path][0], decodes[i.path][1], decodes[i.path][2], settings,
                            decodes[i.path][3] if use_third else None) for i in items]
        rows.append(_row(label, references, [r[0] for r in results], sum(r[1] for r in results), total_words))
        default_texts = default_texts or [r[0] for r in results]
    for beam in args.second_beams:
        results = [combined(decodes[i.path][0], other_beams[beam, i.path], decodes[i.path][2], {}, None) for i in items]
        rows.append(_row(f"  second decode beam {beam}", references, [r[0] for r in results],
                         sum(r[1] for r in results), total_words))
    print("dev decode seconds (this load): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    header = ["variant", "dev WER %", "errors", "S/D/I", "words from 2nd decode (% of fast words)"]
    if not args.no_end_to_end:
        rows += [[label, "", "", "", f"{wall} s ({times}); CPU {cpu} s, {bound} s per core"]
                 for label, wall, times, cpu, bound in end_to_end_rows(args.repeats)]
    _print([header, *rows])

    print("\ndev items whose errors changed (combined, defaults):")
    for item, fast_text, text in zip(items, fast_texts, default_texts, strict=True):
        before, after = errors(item.reference, fast_text), errors(item.reference, text)
        if before != after:
            print(f"- {item.path.relative_to(benchdata_dir())}: {before} -> {after} errors\n"
                  f"    reference: {item.reference}\n    fast:      {fast_text}\n    combined:  {text}")
    if args.fit:
        _fit([decodes[p] for p in extra])


def _fit(decodes: list[tuple]) -> None:
    """Print the agreement Platt fit of each model (trax.asr.combine.CALIBRATIONS)."""
    for label, mine, other in (("embedded:tiny.en (fast pass)", 0, 1), ("embedded:base", 1, 0)):
        probabilities, labels = [], []
        for decode in decodes:
            words = [fast_words(decode[i]) if i == 0 else decode[i] for i in (mine, other)]
            probabilities += [w["probability"] for w in words[0]]
            labels += agreement([token(w["word"]) for w in words[0]], [token(w["word"]) for w in words[1]])
        fit = fit_platt(probabilities, labels, "agreement")
        print(f"{label}: {len(labels)} words, agreement {sum(labels) / len(labels):.3f}, "
              f"slope {fit.slope}, intercept {fit.intercept}")


def _row(label: str, references: list[str], texts: list[str], taken: int | None, total: int) -> list[str]:
    result = corpus_wer(references, texts)
    count = result.substitutions + result.deletions + result.insertions
    return [label, f"{100 * result.wer:.2f}", str(count), f"{result.substitutions}/{result.deletions}/{result.insertions}",
            "" if taken is None else f"{taken} ({100 * taken / total:.1f} %)"]


def _print(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
