"""Simulated meetings: a development set for the embedded diarizer's speaker count and settings.

Usage::

    .venv/bin/python bench/meetings.py                      # draws 1 (choose) and 2 (score), 12 meetings each
    .venv/bin/python bench/meetings.py --choose-seed 3 --score-seed 4 --count 20
    .venv/bin/python bench/meetings.py --list               # only describe the meetings of both draws

Conversations of 2-6 people built from benchdata voices that are in none of the scored dev
recordings (``common.simulated_meetings``: exact who-spoke-when, pauses, 15 % overlapping turns,
dominant and rare speakers, levelled or not). Every variant of the grid is scored on both draws;
the variant with the lowest collar-0 DER on the *choosing* draw is chosen, and its row on the
*scoring* draw is the honest figure. Columns: DER at collar 0 / ±0.25 s, miss, false alarm,
confusion, exact speaker counts, mean signed count error. Detail: bench/README.md, "meetings.py".
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from common import Audio, Diarizer, der_scores, simulated_meetings

from trax.diarization.embedded import (
    EmbeddedOptions,
    load_embedded_models,
)
from trax.process import pin_blas_threads


def score_meetings(diarize: Diarizer, meetings, options: EmbeddedOptions) -> dict[str, float]:
    rows = [(m.uri, m.reference, diarize(m.uri, m.audio, options), [(0.0, len(m.audio) / 16000)]) for m in meetings]
    return der_scores(rows)


def grid(base: EmbeddedOptions) -> list[tuple[str, EmbeddedOptions]]:
    """The variants compared: today's default, the threshold cut with its small-cluster rules,
    resegmentation, the second-pass splits and merges, and the silhouette count rule
    (``count_rule: silhouette``) with its one-speaker floor."""
    off = dataclasses.replace(base, resegment_iterations=0, resegment_min_s=0.0)
    variants = [("default", base), ("no resegmentation (default before it)", off)]
    for threshold in (0.3, 0.35, 0.4, 0.45):
        for min_s in (2.0, 4.0):
            variants.append((f"threshold cut={threshold} min_s={min_s}",
                             dataclasses.replace(base, count_rule="threshold", cluster_threshold=threshold,
                                                 min_speaker_s=min_s)))
    for iterations, drop in ((1, 0.0), (1, 2.0), (2, 4.0)):
        variants.append((f"resegment={iterations} drop<{drop}s", dataclasses.replace(
            base, resegment_iterations=iterations, resegment_min_s=drop)))
    for split, merge in ((0.2, None), (0.25, None), (None, 0.15), (None, 0.2), (0.25, 0.2)):
        variants.append((f"split={split} merge={merge} (no resegment)", dataclasses.replace(
            off, split_distance=split, split_min_s=1.0, merge_distance=merge)))
    for floor in (0.15, 0.25):
        for min_s in (1.0, 2.0, 4.0):
            for distance in (None, 0.41):
                variants.append((f"silhouette min={floor} min_s={min_s} distinct={distance}",
                                 dataclasses.replace(base, count_rule="silhouette", silhouette_min=floor,
                                                     min_speaker_s=min_s, distinct_speaker_distance=distance)))
    return variants


def row(name: str, r: dict[str, float]) -> str:
    return (f"| {name} | {r['der0']:.1f} | {r['der25']:.1f} | {r['miss']:.1f} | {r['fa']:.1f} | {r['conf']:.1f} | "
            f"{r['count_ok']}/{r['items']} | {r['count_err']:+.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choose-seed", type=int, default=1)
    parser.add_argument("--score-seed", type=int, default=2)
    parser.add_argument("--count", type=int, default=12, help="meetings per draw")
    parser.add_argument("--list", action="store_true", help="describe the meetings and stop")
    parser.add_argument("--room", action="store_true", help="every meeting's voices share one room and noise")
    args = parser.parse_args()
    pin_blas_threads()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Audio(Path(tmp))
        draws = {"choose": simulated_meetings(args.choose_seed, args.count, audio, room=args.room),
                 "score": simulated_meetings(args.score_seed, args.count, audio, room=args.room)}
    print("| draw | meeting | kind | length s | speech s | overlap s |")
    print("|---|---|---|---|---|---|")
    for draw, meetings in draws.items():
        for m in meetings:
            speech, overlap = _speech_and_overlap(m.reference)
            print(f"| {draw} | {m.uri} | {m.kind} | {len(m.audio) / 16000:.1f} | {speech:.1f} | {overlap:.1f} |")
    if args.list:
        return
    diarize = Diarizer(load_embedded_models())
    base = EmbeddedOptions()
    results = {label: {draw: score_meetings(diarize, meetings, options) for draw, meetings in draws.items()}
               for label, options in grid(base)}
    chosen = min(results, key=lambda label: (results[label]["choose"]["der0"], abs(results[label]["choose"]["count_err"])))
    header = "| variant | DER c0 | DER c.25 | miss | fa | conf | spk ok | spk err |\n|---|---|---|---|---|---|---|---|"
    for draw in draws:
        print(f"\n{draw} draw (seed {args.choose_seed if draw == 'choose' else args.score_seed}):")
        print(header)
        for label, scores in results.items():
            print(row(label + (" (chosen)" if label == chosen else ""), scores[draw]))
    print(f"\nchosen on the choosing draw: {chosen}; on the scoring draw: "
          f"DER c0 {results[chosen]['score']['der0']:.1f} vs default {results['default']['score']['der0']:.1f}")


def _speech_and_overlap(reference) -> tuple[float, float]:
    """Seconds with at least one speaker, and with two or more (10 ms grid)."""
    import numpy as np

    end = max(e for _, e, _ in reference)
    counts = np.zeros(int(end * 100) + 1, dtype=np.int32)
    for start, stop, _ in reference:
        counts[int(start * 100) : int(stop * 100)] += 1
    return float((counts > 0).sum()) / 100, float((counts > 1).sum()) / 100


if __name__ == "__main__":
    main()
