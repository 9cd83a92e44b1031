"""Languages: identification, routing and accuracy per language, and what it costs English.

Usage::

    .venv/bin/python bench/languages.py [--workflow-repeats 1] [--no-workflow | --only-workflow] [--before CHECKOUT]

Decodes in one process (tiny.en and Whisper base loaded once, the workflow's transcribe_fast
settings) every benchdata-ml clip, espeak-ng speech (es, de, fr) and every English speech clip of
benchdata: with detection (the shipped routing) and with the true language given. Prints one table
per clip (fast-pass log-probability, detected language and probability, WER or CER both ways,
decode times), how often the fast-pass rule sends a recording the wrong way, the English dev WER
before (no routing: ``multilingual_model: null``) and after, and (unless ``--no-workflow``) the
whole workflow's wall time on the 26 dev clips and on the 5-minute recording, before (``--before``:
another checkout, e.g. one at the commit before languages; else this one with no routing) and after.
Column meanings: bench/README.md, section "languages.py".
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from common import OUT, REPO, build_recording, normalized, snakemake, stop_server, workflow_config, write_sheet

from trax.asr import language
from trax.asr.models import resolve_whisper
from trax.asr.transcribe import TranscribeOptions, decode_in_language, load_whisper
from trax.io.languages import CER_LANGUAGES
from trax.quality.benchdata import GENERATED_SPEECH, espeak_wav, language_items, speech_clips, wer_items
from trax.quality.evaluation import corpus_wer


class Models:
    """Both Whisper models, loaded once (what the model server holds)."""

    def __init__(self, settings: dict) -> None:
        self.cache: dict[str, tuple] = {}
        self.settings = settings

    def __call__(self, settings: dict) -> tuple:
        spec = settings["model"]
        if spec not in self.cache:
            options = TranscribeOptions.from_config(settings)
            source = resolve_whisper(spec)
            self.cache[spec] = (load_whisper(source, options), source)
        return self.cache[spec]


def decode(wav: Path, settings: dict, models: Models) -> tuple[str, float, object]:
    """(text, seconds, decoded) of one recording with ``settings``."""
    options = TranscribeOptions.from_config(settings)
    model, source = models(settings)
    start = time.perf_counter()
    decoded = decode_in_language(str(wav), options, model, source, models)
    seconds = time.perf_counter() - start
    return " ".join(s.text for s in decoded.segments if s.text), seconds, decoded


def score(reference: str, text: str, code: str) -> float:
    return 100 * corpus_wer([reference], [text], code).wer


def languages_table(settings: dict, models: Models) -> list[dict]:
    folder = OUT / "languages"
    items = [(i.path, i.language, i.reference, i.duration_s) for i in language_items()]
    wavs = normalized([path for path, *_ in items], folder / "ml")
    rows = []
    cases = [(wavs[path], code, reference, duration, path.name) for path, code, reference, duration in items]
    for voice, (code, text) in GENERATED_SPEECH.items():
        wav = espeak_wav(voice, text, folder / "espeak" / f"{voice}.wav")
        cases.append((wav, code, text, None, f"espeak-ng {voice}"))
    for wav, code, reference, duration, name in cases:
        text, detect_s, decoded = decode(wav, settings, models)
        given_text, given_s, _ = decode(wav, {**settings, "language": code}, models)
        detection = decoded.detection
        rows.append({
            "clip": name, "true": code, "dur_s": duration, "fast_lp": detection.fast_pass_logprob,
            "detected": detection.language, "p": detection.probability, "method": detection.method,
            "unit": "CER" if code in CER_LANGUAGES else "WER",
            "err_detect_%": round(score(reference, text, code), 1), "err_given_%": round(score(reference, given_text, code), 1),
            "decode_detect_s": round(detect_s, 2), "decode_given_s": round(given_s, 2),
        })
    return rows


def english_table(settings: dict, models: Models) -> tuple[list[dict], dict]:
    """Every English speech clip: the fast-pass verdict; the dev WER set before and after."""
    clips = speech_clips()
    wavs = normalized(clips, OUT / "languages" / "en")
    dev = {item.path: item.reference for item in wer_items()}
    before_settings = {**settings, "multilingual_model": None}
    rows, refs, before, after, t_before, t_after = [], [], [], [], [], []
    for clip in clips:
        text, seconds, decoded = decode(wavs[clip], settings, models)
        rows.append({"clip": clip.name, "fast_lp": decoded.detection.fast_pass_logprob,
                     "method": decoded.detection.method, "detected": decoded.detection.language,
                     "p": decoded.detection.probability, "decode_s": round(seconds, 2)})
        if clip in dev:
            old_text, old_s, _ = decode(wavs[clip], before_settings, models)
            refs.append(dev[clip])
            before.append(old_text)
            after.append(text)
            t_before.append(old_s)
            t_after.append(seconds)
    summary = {"dev clips": len(refs), "WER before %": round(100 * corpus_wer(refs, before).wer, 2),
               "WER after %": round(100 * corpus_wer(refs, after).wer, 2),
               "texts identical": sum(a == b for a, b in zip(before, after)),
               "decode s before": round(sum(t_before), 2), "decode s after": round(sum(t_after), 2)}
    return rows, summary


def workflow_walls(repeats: int, before_checkout: Path | None) -> list[dict]:
    """Wall time of the default workflow, before and after, on the dev clips and the 5-minute
    recording; medians of ``repeats`` cold runs, alternating before/after. Before: the
    ``before_checkout``'s default workflow, else this one with ``multilingual_model: null``."""
    import os
    recording = build_recording(OUT / "languages" / "five_minutes.wav")
    sheet = write_sheet(wer_items(), "trax-languages-")
    rows = []
    for name, inputs in (("26 dev clips", str(sheet)), ("5-minute recording", str(recording))):
        walls: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeats):
            for label in ("before", "after"):
                checkout = before_checkout if label == "before" and before_checkout else REPO
                config_data: dict = {"inputs": inputs}
                if label == "before" and before_checkout is None:
                    config_data["transcribe_fast"] = {"multilingual_model": None}
                env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(checkout / "src")}
                workdir = Path(tempfile.mkdtemp(prefix="trax-languages-"))
                try:
                    config = workdir / "config.yaml"
                    config.write_text(yaml.safe_dump(config_data))
                    walls[label].append(snakemake(workdir, config, 2, checkout=checkout, env=env))
                    stop_server(workdir, check=False)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
        before, after = statistics.median(walls["before"]), statistics.median(walls["after"])
        rows.append({"workload": name, "wall_s before": round(before, 1), "wall_s after": round(after, 1),
                     "change %": round(100 * (after - before) / before, 1)})
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}\n")
    if not rows:
        return
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow-repeats", type=int, default=1)
    parser.add_argument("--no-workflow", action="store_true", help="skip the workflow wall-time runs")
    parser.add_argument("--before", type=Path, help="checkout whose default workflow is 'before'")
    parser.add_argument("--only-workflow", action="store_true", help="only the workflow wall-time runs")
    args = parser.parse_args()
    if args.only_workflow:
        show("Workflow wall time, before and after", workflow_walls(args.workflow_repeats, args.before))
        return
    settings = workflow_config()["transcribe_fast"]
    models = Models(settings)
    other = languages_table(settings, models)
    show("Other languages (benchdata-ml clips, espeak-ng speech)", other)
    english, summary = english_table(settings, models)
    show("English speech clips of benchdata: the fast-pass rule", english)
    threshold = settings["english_min_logprob"]
    identified_en = [r for r in english if r["method"] != "fast_pass"]
    missed = [r for r in other if r["method"] == "fast_pass"]
    wrong = [r for r in other if r["detected"] != r["true"] and (r["dur_s"] is None or r["dur_s"] >= 3)]
    close = [r for r in other if r["err_detect_%"] > r["err_given_%"] + 1]
    show("Routing errors and targets", [
        {"check": f"English clips sent to identification (fast-pass log-prob < {threshold:g} or all dropped)",
         "count": f"{len(identified_en)} of {len(english)}", "which": ", ".join(r["clip"] for r in identified_en)},
        {"check": "other-language clips kept as English by the fast pass", "count": f"{len(missed)} of {len(other)}",
         "which": ", ".join(r["clip"] for r in missed)},
        {"check": "other-language clips (>= 3 s) with the wrong language", "count": f"{len(wrong)} of {len(other)}",
         "which": ", ".join(f"{r['clip']} ({r['detected']})" for r in wrong)},
        {"check": "clips whose WER/CER with detection is > 1 pp worse than with the true language",
         "count": f"{len(close)} of {len(other)}", "which": ", ".join(r["clip"] for r in close)},
    ])
    show("English dev WER (in process, both models loaded once)", [summary])
    if not args.no_workflow:
        show("Workflow wall time, before (multilingual_model: null) and after", workflow_walls(args.workflow_repeats, args.before))


if __name__ == "__main__":
    main()
