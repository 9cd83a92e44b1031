"""Refine's second decode and memory: what each CTranslate2 call holds, per call, over a long recording.

Usage::

    .venv/bin/python bench/refine_memory.py --minutes 10,60        # one fresh process per recording
    .venv/bin/python bench/refine_memory.py --minutes 10,60 --no-release   # as before issue 32's fix
    .venv/bin/python bench/refine_memory.py --minutes 30 --env MALLOC_MMAP_THRESHOLD_=1048576

Runs combine mode's second decode (:func:`trax.asr.second_opinion.decode_pieces`, the default
config's ``refine`` settings, every chunk, no hotwords) on a joined recording of real speech
(:func:`trax.quality.benchdata.build_long_recording`) in a fresh process with the model server's
environment (:func:`trax.process.model_process_env`, plus ``--env``). Every call into the
CTranslate2 model (encode, generate, align) is wrapped: the kernel's high-water mark is reset
before it (``/proc/self/clear_refs``) and read after it, so each call's own peak is known, with
its batch, the longest token sequence it produced or aligned, and the RSS before and after.

Prints per recording: the process peak, the peak per tenth of the recording and per kind of call,
the calls with the highest peaks (tokens, RSS before), and a digest of the words (byte-identity
between settings). Every call's row goes to ``bench/out/refine-memory-<min>min.tsv``, the words to
``...words.json``, the resident memory by kind of mapping after each piece to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import OUT, workflow_config

from trax.quality.benchdata import build_long_recording


def status_mb(field: str) -> float:
    """``field`` of /proc/self/status in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def mappings_mb() -> dict[str, float]:
    """This process's resident memory by kind of mapping: glibc's main heap, anonymous mappings
    of 64 MB reservations (glibc's thread arenas), other anonymous ones, file-backed."""
    sizes: dict[str, float] = {"heap": 0.0, "arenas": 0.0, "anon": 0.0, "file": 0.0}
    kind = "anon"
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                low, high = (int(x, 16) for x in fields[0].split("-"))
                name = fields[5] if len(fields) > 5 else ""
                kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else (
                    "arenas" if low % (64 << 20) == 0 and high - low <= 64 << 20 else "anon")
            elif fields[0] == "Rss:":
                sizes[kind] += int(fields[1]) / 1024
    return {k: round(v) for k, v in sizes.items()}


def reset_peak() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


class Watched:
    """A CTranslate2 Whisper model whose encode / generate / align calls are measured."""

    def __init__(self, model: Any, rows: list[dict[str, Any]]) -> None:
        self._model = model
        self._rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _measured(self, kind: str, call: Any, batch: int, tokens: Any) -> Any:
        before = status_mb("VmRSS")
        reset_peak()
        start = time.perf_counter()
        result = call()
        self._rows.append({"call": kind, "batch": batch, "tokens": tokens(result), "rss_before": round(before, 1),
                           "peak": round(status_mb("VmHWM"), 1), "rss_after": round(status_mb("VmRSS"), 1),
                           "s": round(time.perf_counter() - start, 3)})
        return result

    def encode(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return self._measured("encode", lambda: self._model.encode(features, *args, **kwargs), features.shape[0],
                              lambda _: 0)

    def generate(self, features: Any, prompts: Any, *args: Any, **kwargs: Any) -> Any:
        return self._measured("generate", lambda: self._model.generate(features, prompts, *args, **kwargs),
                              len(prompts), lambda result: max(len(r.sequences_ids[0]) for r in result))

    def align(self, features: Any, start_sequence: Any, text_tokens: Any, *args: Any, **kwargs: Any) -> Any:
        return self._measured("align", lambda: self._model.align(features, start_sequence, text_tokens, *args, **kwargs),
                              len(text_tokens), lambda _: max((len(t) for t in text_tokens), default=0))


def child(wav: Path, table: Path, no_release: bool) -> None:
    """Decode ``wav`` as refine's second decode does, every model call measured; print one JSON line."""
    from trax.asr.refine import RefineOptions, load_refine_model
    from trax.asr.second_opinion import decode_pieces
    from trax.asr.transcribe import TranscribeOptions
    from trax.process import pin_blas_threads

    pin_blas_threads()
    settings = dict(workflow_config()["refine"], enabled=True)
    options = RefineOptions.from_config(settings)
    model, source = load_refine_model(options)
    loaded = status_mb("VmRSS")
    rows: list[dict[str, Any]] = []
    model.model = Watched(model.model, rows)
    decode = TranscribeOptions(model=source.spec, beam_size=options.beam_size, language="en",
                               batch_size=options.batch_size)
    digest = hashlib.sha256()
    words = 0
    reset_peak()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime, usage.ru_stime, usage.ru_minflt)
    start = time.perf_counter()
    if no_release:  # the decode as before issue 32's fix: free heap released between pieces only
        from trax.asr import transcribe

        transcribe.release_free_memory = lambda: None
    maps = []
    all_words = []
    for number, (_, piece_words) in enumerate(decode_pieces(model, str(wav), decode, None)):
        maps.append(mappings_mb())
        all_words += piece_words
        digest.update(json.dumps(piece_words, sort_keys=True).encode())
        words += len(piece_words)
        for row in rows:
            row.setdefault("piece", number)
    wall = time.perf_counter() - start
    table.with_suffix(".words.json").write_text(json.dumps(all_words))
    print("resident by mapping after each piece (MB):", json.dumps(maps), file=sys.stderr)
    with open(table, "w", encoding="utf-8") as out:
        keys = list(rows[0])
        out.write("\t".join(keys) + "\n")
        out.writelines("\t".join(str(row[k]) for k in keys) + "\n" for row in rows)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"loaded_mb": round(loaded, 1), "peak_mb": max(r["peak"] for r in rows), "calls": len(rows),
                      "words": words, "digest": digest.hexdigest()[:16], "wall_s": round(wall, 1),
                      "user_s": round(usage.ru_utime - cpu[0], 1), "sys_s": round(usage.ru_stime - cpu[1], 1),
                      "minor_faults": usage.ru_minflt - cpu[2]}), flush=True)


def summary(minutes: int, result: dict[str, Any], table: Path, top: int) -> None:
    """Print the figures of one recording from its table."""
    with open(table, encoding="utf-8") as handle:
        keys = handle.readline().rstrip("\n").split("\t")
        rows = [dict(zip(keys, line.rstrip("\n").split("\t"), strict=True)) for line in handle]
    for row in rows:
        for key in ("batch", "tokens"):
            row[key] = int(row[key])
        for key in ("rss_before", "peak", "rss_after", "s"):
            row[key] = float(row[key])
    print(f"\n{minutes} min: {json.dumps(result)}")
    print("| tenth | calls | RSS before, median | peak encode | peak generate | peak align | longest tokens |")
    print("|---|---|---|---|---|---|---|")
    for tenth in range(10):
        part = rows[len(rows) * tenth // 10: len(rows) * (tenth + 1) // 10]
        if not part:
            continue
        peaks = {kind: max((r["peak"] for r in part if r["call"] == kind), default=0.0)
                 for kind in ("encode", "generate", "align")}
        print(f"| {tenth + 1} | {len(part)} | {statistics.median(r['rss_before'] for r in part):.0f} | "
              f"{peaks['encode']:.0f} | {peaks['generate']:.0f} | {peaks['align']:.0f} | "
              f"{max(r['tokens'] for r in part)} |")
    print(f"top {top} calls by peak (call number of {len(rows)}):")
    for number, row in sorted(enumerate(rows), key=lambda item: -item[1]["peak"])[:top]:
        print(f"  #{number} {row['call']} batch {row['batch']} tokens {row['tokens']}: before {row['rss_before']:.0f}, "
              f"peak {row['peak']:.0f} (+{row['peak'] - row['rss_before']:.0f}), after {row['rss_after']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="10,60", help="comma-separated recording lengths")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the decoding process (repeatable)")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--no-release", action="store_true",
                        help="release no free heap between the decoder's calls (only between pieces, as before)")
    parser.add_argument("--child", nargs=2, metavar=("WAV", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.no_release)
        return
    from trax.process import model_process_env

    OUT.mkdir(parents=True, exist_ok=True)
    clips = OUT / "long-clips"
    clips.mkdir(exist_ok=True)
    env = {**model_process_env(), **dict(item.split("=", 1) for item in args.env)}
    label = " ".join([*args.env, *(["--no-release"] if args.no_release else [])]) or "default"
    print(f"environment: {label}; load {os.getloadavg()[0]:.2f}", flush=True)
    for minutes in (int(m) for m in args.minutes.split(",")):
        audio = OUT / f"long-{minutes}min.wav"
        if not audio.exists():
            build_long_recording(audio, minutes * 60.0, clips)
        table = OUT / f"refine-memory-{minutes}min.tsv"
        load = os.getloadavg()[0]
        command = [sys.executable, __file__, "--child", str(audio), str(table), *(["--no-release"] if args.no_release else [])]
        output = subprocess.run(command, env=env, check=True,
                                stdout=subprocess.PIPE, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        result["load"] = f"{load:.2f}-{os.getloadavg()[0]:.2f}"
        summary(minutes, result, table, args.top)


if __name__ == "__main__":
    main()
