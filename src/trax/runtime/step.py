"""What every rule script shares: logging into the rule's log file and one-line errors.

A rule script does only this::

    from trax.runtime.step import run_step
    run_step(snakemake.log[0], lambda: trax.io.media.normalize(...))

Everything written to stderr (Python logging, ffmpeg, CTranslate2) goes to the log. A
:class:`~trax.errors.TraxError` becomes one line ``trax: error: <file>: <reason>`` in the log and
on the console, and the job exits 1 without a traceback; any other exception keeps its traceback
in the log.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

from trax import console as console_module
from trax import progress
from trax.errors import TraxError

T = TypeVar("T")


def run_step(log_path: str, step: Callable[[], T], subject: str | None = None) -> T:
    """Run ``step`` with stderr and logging redirected to ``log_path``; exit 1 on error.

    Args:
        log_path: The rule's log file.
        step: The work.
        subject: What console lines (progress, warnings) name; by default the log file's stem,
            which every per-recording rule names after the recording id (``logs/<rule>/<id>.log``).
    """
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    console = os.fdopen(os.dup(2), "w", buffering=1)
    progress.set_subject(subject or os.path.splitext(os.path.basename(log_path))[0])
    console_module.attach(console)
    with open(log_path, "w", encoding="utf-8", buffering=1) as log_file:
        sys.stderr.flush()
        os.dup2(log_file.fileno(), 2)
        sys.stderr = log_file
        logging.basicConfig(
            stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
        )
        try:
            return step()
        except TraxError as exc:
            _fail(f"trax: error: {exc}", log_file, console)
        except Exception as exc:
            traceback.print_exc(file=log_file)
            _fail(f"trax: error: unexpected {type(exc).__name__}: {exc} (traceback in {log_path})", log_file, console)


def _fail(line: str, log_file, console) -> NoReturn:  # noqa: ANN001 - text streams
    print(line, file=log_file)
    print(line, file=console)
    log_file.flush()
    console.flush()
    sys.exit(1)


def model_process_env() -> dict[str, str]:
    """Environment for a process that runs models (the model server, an isolated model job).

    * ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads (CTranslate2's, torch's) otherwise spin after
      each parallel region waiting for more work; with a decode beside diarization on few cores the
      spinning threads steal the cores the other one needs.
    * ``MALLOC_MMAP_THRESHOLD_`` 8 MiB: glibc raises its mmap threshold each time a large block is
      freed, so after the first batches the decoder's big per-batch buffers (beams x encoder
      states) come from the heap, fragment it, and the peak ratchets up with the recording's
      length (tiny.en, batch 4: 997 MB after 5 minutes, 1115 MB after 25). A fixed threshold keeps
      them mmapped and returned on free: 925 -> 938 MB over the same 25 minutes, at no measured
      cost in speed (``bench/long.py``). Smaller thresholds (256 KiB) flatten it further but cost
      ~30 % speed in page faults.

    A user's own setting of either wins.
    """
    return {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_MMAP_THRESHOLD_": str(8 * 1024 * 1024), **os.environ}
