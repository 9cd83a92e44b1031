"""Model server memory: where its resident memory goes while transcription and diarization overlap.

Usage::

    .venv/bin/python bench/server_memory.py                    # 30-minute recording, both requests at once
    .venv/bin/python bench/server_memory.py --minutes 120 --repeats 3
    .venv/bin/python bench/server_memory.py --only diarize     # one request alone
    .venv/bin/python bench/server_memory.py --env MALLOC_ARENA_MAX=2   # server environment override

Starts a fresh model server (as the workflow does: ``server`` defaults, the default config's
``transcribe_fast`` and ``diarize`` settings) in a new directory holding a joined recording of real
speech (:func:`trax.quality.benchdata.build_long_recording`), sends the transcribe and diarize
requests at once, samples the server's RSS every 0.1 s, and prints per run: the kernel's peak
(VmHWM), the sampled peak with both requests running and with one, RSS after the models load and
once both requests are done, request times, load average. The cheap stand-in for bench/long.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import OUT, stop_server, workflow_config

from trax.diarization.pipeline import rule_settings
from trax.quality.benchdata import build_long_recording


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` of /proc/PID/status in MB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def one_run(audio: Path, only: str | None) -> dict[str, float]:
    """Fresh server, the requests, the figures; the server is stopped and its directory removed."""
    from trax.runtime.client import _server_is_ours, ensure_server, request
    from trax.runtime.protocol import ServerSettings

    config = workflow_config()
    settings = ServerSettings(**{k: v for k, v in config["server"].items()})
    workdir = Path(tempfile.mkdtemp(prefix="trax-server-memory-"))
    home = os.getcwd()
    try:
        wav = workdir / "results" / "long" / "audio.wav"
        wav.parent.mkdir(parents=True)
        os.link(audio, wav) if os.stat(audio).st_dev == os.stat(workdir).st_dev else shutil.copy(audio, wav)
        os.chdir(workdir)
        ensure_server(settings)
        assert _server_is_ours()
        pid = request("stats")["pid"]
        requests = {
            "transcribe": {"wav_path": str(wav.relative_to(workdir)), "sample_id": "long",
                           "settings": dict(config["transcribe_fast"])},
            "diarize": {"wav_path": str(wav.relative_to(workdir)), "sample_id": "long",
                        "settings": rule_settings(config["diarize"], {})},
        }
        # Load the models first, as the workflow's warm-up does, so the figures are the requests'.
        request("warm", {"settings": requests["transcribe"]["settings"]}, timeout=120)
        request("warm", {"diarize": requests["diarize"]["settings"]}, timeout=120)
        loaded = rss_mb(pid)
        running: set[str] = set()
        times: dict[str, float] = {}
        digests: dict[str, str] = {}
        samples: list[tuple[float, frozenset[str]]] = []
        done = threading.Event()

        def send(method: str) -> None:
            start = time.perf_counter()
            running.add(method)
            result = request(method, requests[method], timeout=settings.request_timeout_s)
            running.discard(method)
            times[method] = time.perf_counter() - start
            digests[method] = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()[:12]

        def sample() -> None:
            while not done.wait(0.1):
                samples.append((rss_mb(pid), frozenset(running)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = os.getloadavg()[0]
        methods = [m for m in requests if only in (None, m)]
        with ThreadPoolExecutor(len(methods)) as pool:
            list(pool.map(send, methods))
        done.set()
        sampler.join()
        stats = request("stats")
        both = [rss for rss, names in samples if len(names) == 2]
        return {"peak_mb": stats["peak_rss_mb"], "loaded_mb": loaded,
                "both_mb": max(both, default=0.0),
                "transcribe_alone_mb": max((r for r, n in samples if n == {"transcribe"}), default=0.0),
                "diarize_alone_mb": max((r for r, n in samples if n == {"diarize"}), default=0.0),
                "end_mb": samples[-1][0] if samples else 0.0, "idle_mb": stats["rss_mb"],
                "transcribe_s": times.get("transcribe", 0.0), "diarize_s": times.get("diarize", 0.0),
                "load": load, "digests": digests}
    finally:
        os.chdir(home)
        stop_server(workdir, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=["transcribe", "diarize"], default=None)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the server (repeatable)")
    args = parser.parse_args()
    os.environ.update(dict(item.split("=", 1) for item in args.env))
    OUT.mkdir(parents=True, exist_ok=True)
    clips = OUT / "long-clips"
    clips.mkdir(exist_ok=True)
    audio = OUT / f"long-{args.minutes}min.wav"
    if not audio.exists():
        build_long_recording(audio, args.minutes * 60.0, clips)
    runs = []
    for number in range(args.repeats):
        row = one_run(audio, args.only)
        runs.append(row)
        print(f"run {number + 1}: " + json.dumps(row), flush=True)
    keys = ["peak_mb", "both_mb", "transcribe_alone_mb", "diarize_alone_mb", "loaded_mb", "idle_mb",
            "transcribe_s", "diarize_s", "load"]
    label = " ".join(args.env) or "default"
    print(f"\n{args.minutes} min, {args.only or 'both'} requests, {label}; median of {len(runs)}")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(f"{statistics.median(r[k] for r in runs):.1f}" for k in keys) + " |")
    print("outputs:", sorted({json.dumps(r["digests"], sort_keys=True) for r in runs}))


if __name__ == "__main__":
    main()
