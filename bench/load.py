"""The model server under load: queue wait and work time per request, no timeouts, clean cancels.

Usage::

    .venv/bin/python bench/load.py                                # 12 x 10-min recordings + 26 dev clips
    .venv/bin/python bench/load.py --recordings 2 --minutes 2 --dev 4   # a small run

Builds N recordings of real speech (``trax.quality.benchdata.build_long_recording``, one seed each)
beside the dev clips, then, each in a fresh directory with ``server: {workers: 1, request_timeout_s:
30}``: (1) ``snakemake --cores 8``; (2) a reference at ``--cores 2`` (server off unless
``--reference-server on``): outputs must be byte-identical; (3) ``--cores 8`` again, SIGINT to
Snakemake's process group (as Ctrl-C) once half the model requests are done, then a rerun that must
give run (1)'s bytes. Prints per request (server log): queue wait, work time; timeouts, failures;
per request in flight at the SIGINT the delay until the server logged it cancelled (target <= 5 s)
and until its work stopped. Logs stay in ``bench/out/load/``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import yaml  # noqa: E402

from trax.io.samples import sample_id_from_name  # noqa: E402
from trax.quality.benchdata import build_long_recording, wer_items  # noqa: E402

OUT = REPO / "bench" / "out" / "load"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
#: Outputs that record wall-clock times and memory: they differ between runs by design.
RUN_COST_FILES = {"metrics.json", "summary.tsv", "aggregate.tsv", "targets.tsv", "summary.html"}
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \d+ trax\.runtime\.server INFO request (\d+) (\w+)"
                  r"(?: (?!waiting |done |cancelled:|stopped )(\S+))? (.*)$")


def build_inputs(args: argparse.Namespace) -> Path:
    """The sample sheet: ``--recordings`` recordings of ``--minutes`` each, and ``--dev`` dev clips."""
    inputs = OUT / "inputs"
    clips = inputs / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(args.recordings):
        path = inputs / f"long{number:02d}_{args.minutes:g}min.wav"
        if not path.exists():
            build_long_recording(path, args.minutes * 60, clips, seed=100 + number)
        rows.append((path.stem, path))
    rows += [(sample_id_from_name(item.path), item.path) for item in wer_items()[: args.dev]]
    sheet = inputs / f"samples-{args.recordings}x{args.minutes:g}-{args.dev}.tsv"
    sheet.write_text("id\tpath\n" + "".join(f"{i}\t{p}\n" for i, p in rows), encoding="utf-8")
    return sheet


def workflow(name: str, sheet: Path, server: dict) -> Path:
    workdir = OUT / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = {"inputs": str(sheet), "server": server}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return workdir


def command(workdir: Path, cores: int, *extra: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
            str(workdir / "config.yaml"), "--cores", str(cores), *extra]


def run(workdir: Path, cores: int, *extra: str) -> float:
    start = time.monotonic()
    with open(workdir / "snakemake.log", "a") as log:
        code = subprocess.run(command(workdir, cores, *extra), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}).returncode
    if code != 0:
        raise SystemExit(f"snakemake failed in {workdir} (exit {code}); see {workdir / 'snakemake.log'}")
    return time.monotonic() - start


def stop_server(workdir: Path) -> None:
    from trax.runtime.client import ServerDied, ServerUnavailable, request

    previous = Path.cwd()
    os.chdir(workdir)
    try:
        request("shutdown")
    except (ServerUnavailable, ServerDied):
        pass
    finally:
        os.chdir(previous)


def server_events(workdir: Path) -> dict[int, dict]:
    """Per request id: method, label, and the times (epoch s) and figures the server logged."""
    events: dict[int, dict] = {}
    log = workdir / "logs" / "model_server.log"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        match = LINE.match(line)
        if not match:
            continue
        stamp, number, method, label, rest = match.groups()
        when = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        event = events.setdefault(int(number), {"method": method, "label": label or "-"})
        if rest.startswith("waiting for a worker"):
            event["received"] = when
        elif rest.startswith("done"):
            event["done"] = when
            event["queued_s"], event["work_s"] = map(float, re.findall(r"([\d.]+) s", rest)[:2])
        elif rest.startswith("cancelled"):
            event["cancelled"] = when
        elif rest.startswith("stopped after its cancel"):
            event["stopped"] = when
    return events


def outputs(workdir: Path) -> dict[str, bytes]:
    root = workdir / "results"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in RUN_COST_FILES}


def job_log_count(workdir: Path, pattern: str) -> int:
    return sum(pattern in p.read_text(encoding="utf-8", errors="replace") for p in (workdir / "logs").rglob("*.log"))


def interrupted_run(workdir: Path, cores: int, expected_done: int) -> tuple[float, int]:
    """Run Snakemake until half the model requests are done, then SIGINT its process group (what
    Ctrl-C does; the server runs in its own session and is not hit). Returns (SIGINT time, exit)."""
    with open(workdir / "snakemake.log", "a") as log:
        proc = subprocess.Popen(command(workdir, cores), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, start_new_session=True)
        while proc.poll() is None:
            done = sum("done" in e and e["method"] != "warm" for e in server_events(workdir).values())
            if done >= expected_done / 2:
                break
            time.sleep(0.5)
        sent = time.time()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    return sent, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=12, help="long recordings (default 12)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each (default 10)")
    parser.add_argument("--dev", type=int, default=26, help="dev clips added (default all 26)")
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--reference-cores", type=int, default=2)
    parser.add_argument("--reference-server", choices=("on", "off"), default="off")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0, help="server.request_timeout_s")
    parser.add_argument("--skip-interrupt", action="store_true")
    args = parser.parse_args()
    server = {"workers": args.workers, "request_timeout_s": args.timeout}
    sheet = build_inputs(args)
    print(f"{args.recordings} x {args.minutes:g} min + {args.dev} dev clips; server {server}; load {os.getloadavg()}")

    loaded = workflow(f"cores{args.cores}", sheet, server)
    wall = run(loaded, args.cores)
    stop_server(loaded)
    events = server_events(loaded)
    print(f"\n--cores {args.cores}: {wall:.0f} s wall\n")
    print(f"{'request':>7}  {'method':<10} {'sample':<28} {'queued s':>9} {'work s':>8}")
    for number, event in sorted(events.items()):
        if "done" in event:
            print(f"{number:>7}  {event['method']:<10} {event['label']:<28} {event['queued_s']:>9.1f} {event['work_s']:>8.1f}")
    finished = [e for e in events.values() if "done" in e]
    print(f"\nrequests done {len(finished)}, max queue wait {max((e['queued_s'] for e in finished), default=0):.1f} s "
          f"(silence limit {args.timeout:g} s); job logs with a timeout ('silent for'): "
          f"{job_log_count(loaded, 'silent for')}; with 'trax: error': {job_log_count(loaded, 'trax: error')}")

    reference = workflow(f"cores{args.reference_cores}", sheet,
                         {**server, "enabled": args.reference_server == "on"})
    wall = run(reference, args.reference_cores)
    stop_server(reference)
    first, second = outputs(loaded), outputs(reference)
    differing = sorted(name for name in first.keys() | second.keys() if first.get(name) != second.get(name))
    print(f"\n--cores {args.reference_cores} (server {args.reference_server}): {wall:.0f} s wall; "
          f"{len(first)} outputs, differing: {differing or 'none'}")

    if args.skip_interrupt:
        return
    interrupted = workflow(f"cores{args.cores}-sigint", sheet, server)
    model_requests = sum(e["method"] != "warm" for e in finished)
    sent, code = interrupted_run(interrupted, args.cores, model_requests)
    time.sleep(10)  # let the server finish unwinding before reading its log
    events = server_events(interrupted)
    in_flight = {n: e for n, e in events.items() if e.get("received", sent + 1) <= sent and e.get("done", sent + 1) > sent}
    print(f"\nSIGINT after {sum(e.get('done', sent + 1) <= sent for e in events.values())} of {model_requests} "
          f"requests done; snakemake exit {code}; in flight: {len(in_flight)}")
    print(f"{'request':>7}  {'method':<10} {'sample':<28} {'cancel logged s':>15} {'work stopped s':>15}")
    late = 0
    for number, event in sorted(in_flight.items()):
        logged = event.get("cancelled", float("inf")) - sent
        stopped = event.get("stopped", event.get("done", float("inf"))) - sent
        late += logged > 5.0
        print(f"{number:>7}  {event['method']:<10} {event['label']:<28} {logged:>15.1f} {stopped:>15.1f}")
    print(f"in-flight requests not logged cancelled within 5 s: {late}")
    wall = run(interrupted, args.cores, "--rerun-incomplete")
    stop_server(interrupted)
    third = outputs(interrupted)
    differing = sorted(name for name in first.keys() | third.keys() if first.get(name) != third.get(name))
    print(f"rerun: {wall:.0f} s wall; differing from --cores {args.cores}: {differing or 'none'}")


if __name__ == "__main__":
    main()
