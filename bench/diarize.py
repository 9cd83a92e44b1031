"""Diarization accuracy and speed on the dev multi-speaker set (13 recordings, 390 s).

Usage::

    .venv/bin/python bench/diarize.py                         # default embedded settings + baseline
    .venv/bin/python bench/diarize.py --set hop_s=0.5 --set switch_penalty=0   # one variant
    .venv/bin/python bench/diarize.py --sweep switch_penalty=0,1,2,4            # one row per value

Items: pyannote-audio/sample/sample.wav and the pyannote debug protocol's dev00, dev01, trñ00
(uri trn00), trn01-trn09, each scored within its UEM (sample.wav: all 30 s). Audio is decoded with
the workflow's own normalize step (16 kHz mono s16 via ffmpeg), so the bench sees what the rule sees.

Columns:

* ``DER c0`` / ``DER c.25`` — corpus diarization error rate (pyannote.metrics, overlapped speech
  scored) at collar 0 and at ±0.25 s around reference boundaries (pyannote ``collar=0.5``);
  ``miss``/``fa``/``conf`` split the collar-0 errors.
* ``spk ok`` — recordings whose hypothesis has as many speakers as the reference.
* ``RTF`` — diarization seconds (models loaded) / audio seconds, median over ``--repeats``.
* ``load s`` — loading the models once. ``peak RSS`` — this process's peak, after all rows.

``one speaker (VAD)`` labels every Silero speech region with a single speaker: the floor any
clustering must beat.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.benchdata import DerItem, der_items  # noqa: E402
from trax.diarization.annotation import Turn, read_rttm  # noqa: E402
from trax.diarization.embedded import (  # noqa: E402
    EmbeddedOptions,
    diarize_embedded,
    load_embedded_models,
    speech_regions,
)
from trax.diarization.pipeline import fix_torch_threads  # noqa: E402
from trax.media import NormalizeOptions, normalize  # noqa: E402
from trax.transcribe import load_wav, pin_blas_threads  # noqa: E402


def load_items(workdir: Path) -> list[tuple[DerItem, object]]:
    """Normalize every item like the workflow does and load the 16 kHz samples."""
    loaded = []
    for item in der_items():
        wav = workdir / f"{item.uri}.wav"
        normalize(str(item.path), str(wav), str(workdir / f"{item.uri}.json"), item.uri, NormalizeOptions())
        loaded.append((item, load_wav(wav)))
    return loaded


def annotation(turns: list[Turn], uri: str):
    from pyannote.core import Annotation, Segment

    result = Annotation(uri=uri)
    for index, turn in enumerate(turns):
        result[Segment(turn.start, turn.end), index] = turn.speaker
    return result


def score(items, hypotheses: dict[str, list[Turn]]) -> dict[str, float]:
    """Corpus DER at collar 0 and 0.5 (±0.25 s), components, speaker-count accuracy."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metrics = {0.0: DiarizationErrorRate(collar=0.0, skip_overlap=False),
               0.5: DiarizationErrorRate(collar=0.5, skip_overlap=False)}
    count_ok = 0
    for item, _ in items:
        reference = annotation(read_rttm(item.rttm, uri=item.uri).get(item.uri, []), item.uri)
        hypothesis = annotation(hypotheses[item.uri], item.uri)
        uem = Timeline([Segment(s, e) for s, e in item.uem], uri=item.uri)
        for metric in metrics.values():
            metric(reference, hypothesis, uem=uem)
        count_ok += len(reference.labels()) == len(hypothesis.labels())
    c0 = metrics[0.0]
    components = c0.accumulated_
    return {
        "der0": 100 * abs(c0),
        "der25": 100 * abs(metrics[0.5]),
        "miss": 100 * components["missed detection"] / components["total"],
        "fa": 100 * components["false alarm"] / components["total"],
        "conf": 100 * components["confusion"] / components["total"],
        "count_ok": count_ok,
    }


def run_variant(models, items, options: EmbeddedOptions, repeats: int, one_speaker: bool = False):
    hypotheses: dict[str, list[Turn]] = {}
    rtfs = []
    for _ in range(repeats):
        elapsed = duration = 0.0
        for item, audio in items:
            start = time.perf_counter()
            if one_speaker:
                turns = [Turn(s / 16000, e / 16000, "S") for s, e in speech_regions(audio, options)]
            else:
                turns, _ = diarize_embedded(models, audio, options)
            elapsed += time.perf_counter() - start
            duration += len(audio) / 16000
            hypotheses[item.uri] = turns
        rtfs.append(elapsed / duration)
    return {**score(items, hypotheses), "rtf": statistics.median(rtfs)}


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an EmbeddedOptions field for all rows")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="one row per value (several --sweep flags: their product)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (diarize.threads)")
    args = parser.parse_args()

    pin_blas_threads()
    fix_torch_threads(args.threads)
    base = dataclasses.replace(EmbeddedOptions(), **{k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)})
    variants = [({}, base)]
    for sweep in args.sweep:
        key, values = sweep.split("=", 1)
        variants = [({**label, key: parse_value(v)}, dataclasses.replace(opts, **{key: parse_value(v)}))
                    for label, opts in variants for v in values.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        items = load_items(Path(tmp))
    start = time.perf_counter()
    models = load_embedded_models()
    load_s = time.perf_counter() - start
    total = sum(len(audio) for _, audio in items) / 16000
    print(f"dev set: {len(items)} recordings, {total:.1f} s; models loaded in {load_s:.1f} s; torch threads {args.threads}")
    print(f"base settings: {base}")
    rows = [("one speaker (VAD)", run_variant(models, items, base, 1, one_speaker=True))]
    for label, options in variants:
        name = "embedded " + (" ".join(f"{k}={v}" for k, v in label.items()) or "(defaults)")
        rows.append((name, run_variant(models, items, options, args.repeats)))
    header = f"| {'variant':<44} | DER c0 | DER c.25 | miss | fa | conf | spk ok | RTF |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, r in rows:
        print(f"| {name:<44} | {r['der0']:6.1f} | {r['der25']:8.1f} | {r['miss']:4.1f} | {r['fa']:4.1f} | "
              f"{r['conf']:4.1f} | {r['count_ok']:3d}/{len(items)} | {r['rtf']:.3f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB (whole bench process, pyannote.metrics included)")


if __name__ == "__main__":
    main()
