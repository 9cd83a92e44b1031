"""Lines for the person at the terminal, beside the job's log.

A Snakemake job's stderr is its log file (:func:`trax.runtime.step.run_step` redirects it), so anything a
user must see while a run goes on is also written to the terminal, through the copy of the
original stderr that ``run_step`` keeps and hands to :func:`attach`. Each line goes out in one
``write`` call of less than ``PIPE_BUF`` (4096) bytes, so lines of jobs running side by side never
mix, and each names its recording (``trax: <id>: …``), so they can be told apart. A job running in
a thread of the Snakemake process shares that process's stderr with Snakemake's own log handler,
which writes a message and its newline in two calls; the line waits for that handler's lock, so it
never lands between the two.

Outside a job (tests, the library used directly) nothing is attached and lines go to the log only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import TextIO

log = logging.getLogger("trax")

_console: TextIO | None = None
_local = threading.local()

#: Lines are cut to this many bytes so one ``write`` stays atomic on a pipe (POSIX PIPE_BUF).
MAX_LINE_BYTES = 4000


def attach(stream: TextIO | None, thread_only: bool = False) -> None:
    """Send console lines to ``stream`` (the terminal's stderr), or nowhere with None.

    Args:
        stream: The terminal.
        thread_only: Only for lines written by this thread (a job running in a thread of the
            Snakemake process, see :mod:`trax.runtime.jobs`); else for the whole process.
    """
    global _console
    _local.console = stream
    if not thread_only:
        _console = stream


def _stream() -> TextIO | None:
    return getattr(_local, "console", None) or _console


def attached() -> bool:
    """Whether console lines reach a terminal stream (inside a rule job)."""
    return _stream() is not None


def line(text: str, level: int = logging.INFO) -> None:
    """Write one whole line to the console (when attached) and to the log."""
    log.log(level, text)
    stream = _stream()
    if stream is not None:
        write(stream, text)


def write(stream: TextIO, text: str) -> None:
    """Write ``text`` to ``stream`` as one whole line, in one ``write`` call."""
    data = (text.replace("\n", " ") + "\n").encode("utf-8", "replace")
    if len(data) > MAX_LINE_BYTES:
        data = data[: MAX_LINE_BYTES - 4] + b"...\n"
    with _handlers_writing_to(stream):
        try:
            stream.flush()
            os.write(stream.fileno(), data)
        except (OSError, ValueError):  # a closed terminal must not fail the job
            pass


@contextlib.contextmanager
def _handlers_writing_to(stream: TextIO) -> Iterator[None]:
    """Hold the lock of every logging handler that writes to ``stream`` (Snakemake's console
    handler, when the job runs in its process), so none is halfway through a line meanwhile."""
    # list() copies in one C call, so another thread creating a logger cannot change it midway.
    registered = list(logging.Logger.manager.loggerDict.values())
    loggers = [logging.getLogger(), *(item for item in registered if isinstance(item, logging.Logger))]
    handlers = {id(handler): handler for logger in loggers for handler in list(logger.handlers)
                if getattr(handler, "stream", None) is stream and handler.lock is not None}
    with contextlib.ExitStack() as held:
        for _, handler in sorted(handlers.items()):
            handler.acquire()
            held.callback(handler.release)
        yield


def warn(subject: object, message: str) -> None:
    """``trax: warning: <subject>: <message>`` on the console and in the log."""
    line(f"trax: warning: {subject}: {message}", logging.WARNING)
