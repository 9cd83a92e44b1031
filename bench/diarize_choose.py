"""Diarizer settings chosen without the scored items: dev leave-one-out and unscored meeting draws.

Usage::

    .venv/bin/python bench/diarize_choose.py                       # every search space
    .venv/bin/python bench/diarize_choose.py --grid spread --grid long   # spaces whose name contains TEXT
    .venv/bin/python bench/diarize_choose.py --room     # meetings whose voices share one room

Each variant of a search space (``grids``) is scored on the 13 dev recordings and on simulated
meetings (``bench/meetings.py``; draw ``--choose-seed``, never scored, and ``--score-seed``); then the
two honest choices: dev leave-one-recording-out, and the variant best on the choosing draw with its
dev and scoring-draw figures. Columns: DER collar 0 / ±0.25 s, false alarm, exact speaker counts,
mean signed count error. Embeddings are cached in bench/out/diarize-cache: reruns embed nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from common import OUT, Audio, Diarizer, der_scores, load_items, per_file_components, pooled_der, simulated_meetings

from trax.diarization.embedded import EmbeddedOptions, load_embedded_models
from trax.process import pin_blas_threads


def grids(base: EmbeddedOptions) -> dict[str, list[tuple[str, EmbeddedOptions]]]:
    """The search spaces of issue 31, each with today's default first (a tie keeps it): the
    ``spread`` count rule by penalty (with and without the small-speaker rules), longer clustering
    windows (with the threshold and with the spread rule), the silhouette rule with its one-speaker
    floor fitted here, the overlap second-speaker rule, and the overlap detector's threshold."""
    default = [("default", base)]
    spread = [(f"spread penalty={p} min_s={m}", dataclasses.replace(base, count_rule="spread", count_penalty=p,
                                                                  min_speaker_s=m))
              for p in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0) for m in (4.0, 2.0)]
    long = [(f"window {w}/{h} cut={t}", dataclasses.replace(base, cluster_window_s=w, cluster_hop_s=h,
                                                             cluster_threshold=t))
            for w, h in ((1.5, 0.5), (2.0, 0.5), (3.0, 0.5)) for t in (0.25, 0.3, 0.35)]
    long_spread = [(f"window {w}/0.5 spread penalty={p}", dataclasses.replace(
        base, cluster_window_s=w, cluster_hop_s=0.5, count_rule="spread", count_penalty=p))
        for w in (1.5, 2.0, 3.0) for p in (4.0, 8.0, 16.0)]
    silhouette = [(f"silhouette min={q} min_s={m}", dataclasses.replace(base, count_rule="silhouette",
                                                                       silhouette_min=q, min_speaker_s=m))
                  for q in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3) for m in (4.0, 2.0)]
    overlap = [(f"overlap_margin={m}", dataclasses.replace(base, overlap_margin=m))
               for m in (0.01, 0.02, 0.03, 0.05, 0.08)]
    detector = [(f"overlap_detector p>={t}", dataclasses.replace(base, overlap_detector=True, overlap_threshold=t))
                for t in (0.4, 0.5, 0.6, 0.7, 0.8)]
    return {"spread count rule": default + spread, "long clustering windows": default + long,
            "long windows + spread": default + long_spread,
            "silhouette count, fitted floor": default + silhouette, "overlap second speaker": default + overlap,
            "overlap detector": default + detector}


def row(label: str, dev: dict, choose: dict, score: dict) -> str:
    return (f"| {label} | {pooled_der(list(dev.values()), 0.0):.1f} | {pooled_der(list(dev.values()), 0.5):.1f} | "
            f"{sum(f['count_ok'] for f in dev.values())}/{len(dev)} | "
            f"{sum(f['count_err'] for f in dev.values()) / len(dev):+.2f} | "
            f"{choose['der0']:.1f} | {choose['count_ok']}/{choose['items']} | {choose['count_err']:+.2f} | "
            f"{score['der0']:.1f} | {score['der25']:.1f} | {score['fa']:.1f} | {score['count_ok']}/{score['items']} | "
            f"{score['count_err']:+.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="append", default=[], metavar="TEXT",
                        help="only the search spaces whose name contains TEXT (repeatable)")
    parser.add_argument("--choose-seed", type=int, default=1)
    parser.add_argument("--score-seed", type=int, default=2)
    parser.add_argument("--count", type=int, default=12, help="meetings per draw")
    parser.add_argument("--room", action="store_true", help="every meeting's voices share one room and noise")
    args = parser.parse_args()
    pin_blas_threads()
    with tempfile.TemporaryDirectory() as tmp:
        items = load_items(Path(tmp))
        audio = Audio(Path(tmp))
        draws = {"choose": simulated_meetings(args.choose_seed, args.count, audio, room=args.room),
                 "score": simulated_meetings(args.score_seed, args.count, audio, room=args.room)}
    diarize = Diarizer(load_embedded_models(), OUT / "diarize-cache")
    spaces = {name: variants for name, variants in grids(EmbeddedOptions()).items()
              if not args.grid or any(part in name for part in args.grid)}
    uris = [item.uri for item, _ in items]
    for name, variants in spaces.items():
        results = {}
        for label, options in variants:
            dev = per_file_components(items, {item.uri: diarize(item.uri, audio, options) for item, audio in items})
            meetings = {draw: der_scores([(m.uri, m.reference, diarize(m.uri, m.audio, options),
                                           [(0.0, len(m.audio) / 16000)]) for m in ms]) for draw, ms in draws.items()}
            results[label] = (dev, meetings["choose"], meetings["score"])
        print(f"\n### {name} (meetings{' in a room' if args.room else ''}: choosing draw seed {args.choose_seed}, "
              f"scoring draw seed {args.score_seed})")
        print("| variant | dev c0 | dev c.25 | dev spk ok | dev spk err | choose c0 | choose spk ok | choose spk err "
              "| score c0 | score c.25 | score fa | score spk ok | score spk err |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, (dev, choose, score) in results.items():
            print(row(label, dev, choose, score))
        held, chosen = [], []
        for uri in uris:
            best = min(results, key=lambda label: pooled_der([results[label][0][u] for u in uris if u != uri], 0.0))
            held.append(results[best][0][uri])
            chosen.append(best)
        counts = {label: chosen.count(label) for label in dict.fromkeys(chosen)}
        print(f"\ndev leave-one-out: DER {pooled_der(held, 0.0):.1f} / {pooled_der(held, 0.5):.1f} %, count exact "
              f"{sum(f['count_ok'] for f in held)}/{len(held)}, mean error "
              f"{sum(f['count_err'] for f in held) / len(held):+.2f}; chosen: "
              f"{'; '.join(f'{k} x{v}' for k, v in counts.items())}")
        pick = min(results, key=lambda label: (results[label][1]["der0"], abs(results[label][1]["count_err"])))
        print(f"chosen on the choosing draw: {pick}")
        print(row(pick, *results[pick]).replace(f"| {pick} |", "| meetings-chosen |"))


if __name__ == "__main__":
    main()
