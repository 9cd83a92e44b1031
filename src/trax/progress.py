"""Progress reporting for long stages: percent of audio done, written to the job's log.

A stage calls :func:`report` and does not care where it runs. In a Snakemake job the default hook
logs the line (``run_step`` sends logging to the job's log file). Inside the model server the
request handler installs a hook that streams the progress to the waiting client, which logs it in
*its* job log — so the log of the job that asked for the work shows its progress either way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("trax.progress")

#: Called with (stage, seconds of audio done, total seconds of audio).
ProgressHook = Callable[[str, float, float], None]

_local = threading.local()


def format_progress(stage: str, done: float, total: float) -> str:
    percent = 100.0 * done / total if total > 0 else 100.0
    return f"{stage}: {done:.1f} / {total:.1f} s of audio ({percent:.0f}%)"


def log_progress(stage: str, done: float, total: float) -> None:
    log.info(format_progress(stage, done, total))


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
