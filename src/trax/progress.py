"""Progress of long stages: seconds of audio done, percent and ETA, in the log and on the console.

A stage calls :func:`report` and does not care where it runs. In a Snakemake job the default hook
logs the line (``run_step`` sends logging to the job's log file) and, for a stage that will run
longer than :data:`CONSOLE_AFTER_S`, also writes it to the terminal each time another 10 % is done
(:mod:`trax.console`). Inside the model server the request handler installs a hook that streams
the progress to the waiting client, which reports it in *its* job — so the job that asked for the
work shows its progress, on the console too, either way.

Console lines look like Snakemake's own progress lines, plain and whole, naming the recording::

    trax: meeting_01: transcribe 12:00 of 1:00:00 audio (20%), 0:41 elapsed, ETA 2:44

Why not a Snakemake logger plugin (``snakemake-logger-plugin-rich`` and the logger plugin
interface): a logger plugin sees only the log records of the Snakemake process itself (job
started/finished, "N of M steps done"); a job's own output goes straight from the job process to
the terminal and never passes through it, so a plugin cannot show how far inside a job a
transcription has got. Plain lines work under any logger plugin, in ``nohup`` logs and on Slurm.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from trax import console

log = logging.getLogger("trax.progress")

#: Called with (stage, seconds of audio done, total seconds of audio).
ProgressHook = Callable[[str, float, float], None]

#: A stage shows progress on the console when it is expected to run longer than this (seconds),
#: judged from its speed so far. Shorter stages would only add noise between Snakemake's lines.
#: ``$TRAX_PROGRESS_AFTER_S`` overrides it (0 shows every stage; the tests use that).
CONSOLE_AFTER_S = 30.0
CONSOLE_AFTER_ENV = "TRAX_PROGRESS_AFTER_S"
#: Console lines come at least every this many percent of the audio.
CONSOLE_STEP_PERCENT = 10

_local = threading.local()
_lock = threading.Lock()


@dataclass
class _Job:
    """The job progress is reported for: the recording console lines name, when the job started
    (elapsed time and ETA include loading), and per stage [started, last console decile]."""

    subject: str = "?"
    started: float | None = None
    stages: dict[str, list[float]] = field(default_factory=dict)


#: The job of a process that runs one (``run_step``); threads fall back to it.
_process_job = _Job()


def _job() -> _Job:
    return getattr(_local, "job", None) or _process_job


def set_subject(subject: str, thread_only: bool = False) -> None:
    """Name the recording this job works on in console lines and start its clock.

    Args:
        subject: The recording id.
        thread_only: For a job running in a thread of a process that runs many (``trax.runtime.jobs``):
            only this thread's reports belong to it.
    """
    global _process_job
    job = _Job(subject, time.monotonic())
    _local.job = job
    if not thread_only:
        _process_job = job


def format_progress(stage: str, done: float, total: float) -> str:
    percent = 100.0 * done / total if total > 0 else 100.0
    return f"{stage}: {done:.1f} / {total:.1f} s of audio ({percent:.0f}%)"


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def console_after_s() -> float:
    try:
        return float(os.environ.get(CONSOLE_AFTER_ENV, CONSOLE_AFTER_S))
    except ValueError:
        return CONSOLE_AFTER_S


def log_progress(stage: str, done: float, total: float) -> None:
    """The default hook: a line in the job's log, and on the console every 10 % of a long stage."""
    log.info(format_progress(stage, done, total))
    if not console.attached():
        return
    now = time.monotonic()
    fraction = min(1.0, done / total) if total > 0 else 1.0
    job = _job()
    with _lock:
        state = job.stages.setdefault(stage, [job.started or now, -1.0])
        started, last = state
        decile = float(int(fraction * 100) // CONSOLE_STEP_PERCENT)
        if decile <= last:
            return
        elapsed = now - started
        expected = elapsed / fraction if fraction > 0 else float("inf")
        if last < 0 and expected < console_after_s() and fraction < 1.0:
            return  # a short stage so far: stay quiet (and decide again at the next step)
        if last < 0 and fraction >= 1.0 and elapsed < console_after_s():
            return
        state[1] = decile
    eta = f", ETA {clock(expected - elapsed)}" if fraction < 1.0 else ", done"
    console.line(f"trax: {job.subject}: {stage} {clock(done)} of {clock(total)} audio "
                 f"({100 * fraction:.0f}%), {clock(elapsed)} elapsed{eta}")


def start(stage: str) -> None:
    """Mark the start of ``stage`` in this process (its ETA counts from here)."""
    with _lock:
        _job().stages[stage] = [time.monotonic(), -1.0]


def report(stage: str, done: float, total: float) -> None:
    """Report that ``done`` of ``total`` seconds of audio are processed by ``stage``."""
    getattr(_local, "hook", log_progress)(stage, done, total)


@contextlib.contextmanager
def hooked(hook: ProgressHook) -> Iterator[None]:
    """Send this thread's progress reports to ``hook`` for the duration of the block."""
    previous = getattr(_local, "hook", log_progress)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous
