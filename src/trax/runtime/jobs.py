"""How a rule's work runs: inside the Snakemake process, or in a fresh Python process for models.

Every rule is a short ``run:`` block that calls :func:`run_job` with a library function and its
arguments. With the workflow profile's ``force-use-threads: true`` Snakemake runs a ``run:`` job in
a thread of its own process, so a light step (merge, export, figures…) costs a function call
instead of a Python start-up plus imports (0.5-0.9 s a job before). Where work needs a model:

* model server on: the job's thread sends the request over the socket and waits (the server has
  the models and pins BLAS; nothing heavy is imported here);
* model server off: the job runs in a fresh ``python -m trax.runtime.jobs`` process that loads the model
  itself and exits, so model memory and BLAS pinning never touch the Snakemake process.

Both give the same bytes: the same library function builds each output.

A job's logging (``trax.*`` loggers, progress lines) goes to its ``log:`` file; a
:class:`~trax.errors.TraxError` becomes one line ``trax: error: <file>: <reason>`` in the log and on
the console, and the job fails.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trax import console, progress
from trax.errors import TraxError
from trax.process import model_process_env
from trax.runtime.protocol import ServerSettings

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
#: Text before the peak memory figure in the log of a job run by :func:`run_isolated`.
PEAK_RSS_LOG = "peak resident memory of this job's process:"


class JobFailed(Exception):
    """A job failed; its one-line reason was already written to the log and the console."""


class _ThisThread(logging.Filter):
    """Pass only records logged by one thread (the job's), so parallel jobs keep separate logs."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


def run_job(log_path: str, function: str, /, subject: str | None = None, **kwargs: Any) -> Any:
    """Run ``function(**kwargs)`` for one job in this thread, logging to ``log_path``.

    Args:
        log_path: The rule's ``log:`` file (rewritten).
        function: ``module:name`` of a trax function, e.g. ``trax.transcript.merge:merge_files``.
        subject: What console lines name; by default the log file's stem (the recording id).
        **kwargs: Its arguments (plain values: paths, settings dicts).

    Raises:
        JobFailed: The function raised; the reason is in the log (and on the console).
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("trax")
    with open(log_path, "w", encoding="utf-8", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_ThisThread())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # Progress and warnings of this job reach the terminal too, named after its recording
        # (logs/<rule>/<id>.log), in whole lines (trax.console).
        progress.set_subject(subject or Path(log_path).stem, thread_only=True)
        console.attach(sys.stderr, thread_only=True)
        try:
            # A copy: settings dicts come straight from the workflow's config, shared by every job.
            return resolve(function)(**copy.deepcopy(kwargs))
        except TraxError as exc:
            line = f"trax: error: {exc}"
        except Exception as exc:  # a bug: keep the traceback in the log
            traceback.print_exc(file=log_file)
            line = f"trax: error: unexpected {type(exc).__name__}: {exc} (traceback in {log_path})"
        finally:
            logger.removeHandler(handler)
            console.attach(None, thread_only=True)
            from trax.process import release_free_memory

            # Jobs run in threads of one long-lived Snakemake process: what this job freed is
            # returned now, so the next job's peak does not sit on top of it.
            release_free_memory()
        print(line, file=log_file)
        console.write(sys.stderr, line)
        # Not the line again: Snakemake prints the exception's message under its own error block.
        raise JobFailed(f"see {log_path}")


def run_isolated(log_path: str, function: str, /, **kwargs: Any) -> None:
    """Run ``function(**kwargs)`` in a fresh Python process (for jobs that load models themselves).

    The arguments travel as JSON on the child's stdin, not its command line: a domain glossary can
    be hundreds of kB (past the kernel's per-argument limit of 128 kB, "Argument list too long"),
    and a command line is visible to every user in ``ps``. The child runs
    :func:`trax.runtime.step.run_step`: stderr and logging go to ``log_path``, an error is one line
    on the console.

    Raises:
        JobFailed: The child exited non-zero (its reason is in the log and on the console).
        TraxError: The child could not be started at all.
    """
    command = [sys.executable, "-m", "trax.runtime.jobs", log_path, function]
    try:
        returncode = subprocess.run(command, input=json.dumps(kwargs).encode("utf-8"),
                                    env=model_process_env()).returncode
    except OSError as exc:
        raise TraxError(log_path, f"cannot start an isolated job for {function}: {exc}") from None
    if returncode != 0:
        raise JobFailed(f"{function} failed (see {log_path})")


def run_model_job(log_path: str, function: str, /, server: ServerSettings | None, needs_model: bool = True,
                  **kwargs: Any) -> Any:
    """Run a stage function that may need a model.

    Args:
        log_path: The rule's ``log:`` file.
        function: ``module:name`` of a stage function that takes ``remote`` (see
            :func:`trax.asr.transcribe.transcribe_file`).
        server: The workflow's model server settings. Enabled: the job runs in this thread and the
            function sends its model work to the server through ``remote``. Otherwise it runs in a
            fresh process (:func:`run_isolated`) that loads the model itself.
        needs_model: False when the job will load no model (e.g. refinement off): it then runs in
            this thread either way.
        **kwargs: The function's other arguments.
    """
    if server is not None and server.enabled:
        from trax.runtime.client import server_remote

        return run_job(log_path, function, remote=server_remote(server), **kwargs)
    if not needs_model:
        return run_job(log_path, function, **kwargs)
    return run_isolated(log_path, function, **kwargs)


def resolve(function: str) -> Callable[..., Any]:
    """The function named ``module:name``."""
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    """``python -m trax.runtime.jobs LOG MODULE:FUNCTION < JSON_KWARGS`` (see :func:`run_isolated`)."""
    log_path, function = argv if argv is not None else sys.argv[1:]
    kwargs = json.loads(sys.stdin.buffer.read())
    from trax.runtime.step import run_step

    run_step(log_path, lambda: _run_and_log_peak(function, kwargs))


def _run_and_log_peak(function: str, kwargs: dict[str, Any]) -> Any:
    """Run the job, then log this process's peak memory: the kernel's high-water mark, exact,
    where Snakemake's benchmark ``max_rss`` samples (every 0.5 s, then every 30 s) and can miss
    a short peak."""
    from trax.process import process_peak_rss_mb

    result = resolve(function)(**kwargs)
    logging.getLogger("trax").info("%s %.1f MB", PEAK_RSS_LOG, process_peak_rss_mb())
    return result


if __name__ == "__main__":
    main()
