"""This process's resources, shared by every stage and the runtime: CPU threads and memory.

BLAS is pinned to one thread in every decoding process (results must not depend on ``--cores`` or
the model server), and freed heap is handed back between the pieces of a long recording. Imports
nothing of trax: any module may use it.
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import sys
import threading
import types
from typing import Any

#: Set in a process whose BLAS libraries were all pinned to one thread by environment at start.
BLAS_PINNED_ENV = "TRAX_BLAS_PINNED"
#: Thread-count variables the BLAS builds we ship read when they load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                         "GOTO_NUM_THREADS")


def pin_blas_by_environment() -> None:
    """Pin every BLAS library this process will load to one thread, without threadpoolctl.

    Must run before numpy (or anything linking a BLAS) is imported; the model server calls it first
    thing. Overrides the values a Snakemake job that started the server passed down.
    """
    import sys

    if "numpy" in sys.modules:
        raise RuntimeError("pin_blas_by_environment() must run before numpy is imported")
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    os.environ[BLAS_PINNED_ENV] = "1"


def pin_blas_threads() -> None:
    """Run numpy's BLAS (OpenBLAS) single-threaded in this process, for good.

    faster-whisper computes log-mel features with a numpy matrix product, and OpenBLAS sums in
    another order with more threads: with ``OMP_NUM_THREADS=1`` (which Snakemake sets for a
    one-thread job) pocketsphinx 001 decoded to avg_logprob -0.5313, with 2 threads to -0.5575.
    One thread everywhere makes results independent of ``--cores``, the environment and the model
    server. It is process-wide and never restored, so concurrent server requests cannot flip it
    under each other; the product is small, so the cost is negligible.

    The model server pins by environment instead (:func:`pin_blas_by_environment`, before any BLAS
    library loads), and then this does nothing: threadpoolctl walks the loaded libraries with
    ``dl_iterate_phdr`` holding the dynamic loader's lock and calls back into Python, so in a
    multi-threaded process it deadlocks against a thread importing an extension module (seen: a
    transcribe request pinning while a diarize request imported scipy).
    """
    if os.environ.get(BLAS_PINNED_ENV) == "1":
        return
    import numpy  # noqa: F401 - threadpoolctl only finds BLAS libraries already loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def process_rss_mb() -> float:
    """Resident memory of this process in MB."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 1048576


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process so far in MB (the kernel's high-water mark, so a
    short spike between two samples counts too)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1048576 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``; nothing elsewhere).

    Called between the pieces of a long recording (:func:`trax.io.media.audio_pieces`) and after
    each ``run:`` job (:func:`trax.runtime.jobs.run_job`): what was freed otherwise stays resident,
    scattered between live blocks, and the next peak lands on top of it, so a process's peak
    crept up with the recording's length.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` from the running process's own symbols, or None (musl, macOS)."""
    import ctypes

    return getattr(ctypes.CDLL(None), "malloc_trim", None)


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


#: Packages ctranslate2 imports when it is imported, for its model converters only: torch and
#: transformers, ~2.5 s here before a Whisper model can load (a cold run's first decode waited for
#: them). Decoding never uses them; :func:`trax.asr.ct2_hf.convert_to_ct2` binds them when it converts.
CONVERTER_ONLY_IMPORTS = ("torch", "transformers")


class _KeptOut(importlib.abc.MetaPathFinder):
    """Makes some top-level packages unimportable, for the thread that installed it only (the model
    server loads other models, which do import torch, on other threads at the same time)."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if threading.get_ident() == self.thread and fullname.partition(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {fullname!r} (kept out by trax)", name=fullname)
        return None


def import_faster_whisper() -> types.ModuleType:
    """``import faster_whisper``, without the :data:`CONVERTER_ONLY_IMPORTS` when they are not loaded
    yet (ctranslate2 guards them with ``try``/``except ImportError`` and loads fine without them)."""
    if "faster_whisper" not in sys.modules and not any(name in sys.modules for name in CONVERTER_ONLY_IMPORTS):
        finder = _KeptOut(CONVERTER_ONLY_IMPORTS)
        sys.meta_path.insert(0, finder)
        try:
            import faster_whisper
        finally:
            sys.meta_path.remove(finder)
    import faster_whisper

    bound_vad_batches()
    return faster_whisper


#: Silero VAD windows (512 samples, 32 ms) run through ONNX Runtime at a time. faster-whisper runs
#: up to 10000 (5 min 20 s) in one call, and the model's activations for them took ~90 MB at once
#: for each 5-minute piece, in transcription and diarization alike, often both at the same time in
#: the model server. 1000 windows (32 s) take a tenth; the LSTM state is carried from block to
#: block, so the speech probabilities are the same bits (checked in tests/test_fast_path.py).
VAD_BLOCK_WINDOWS = 1000


def bound_vad_batches() -> None:
    """Make faster-whisper's Silero VAD run :data:`VAD_BLOCK_WINDOWS` windows at a time, in this
    process, for good (idempotent). Called by :func:`import_faster_whisper`."""
    from faster_whisper.vad import SileroVADModel

    if getattr(SileroVADModel.__call__, "_trax_blocked", False):
        return
    unbounded = SileroVADModel.__call__

    def blocked(self: Any, audio: Any, num_samples: int = 512, context_size_samples: int = 64) -> Any:
        import numpy as np

        if audio.ndim != 1 or audio.shape[0] % num_samples or audio.shape[0] <= VAD_BLOCK_WINDOWS * num_samples:
            return unbounded(self, audio, num_samples, context_size_samples)
        # faster-whisper 1.2.1's SileroVADModel.__call__, with its batch of 10000 windows made smaller.
        h = np.zeros((1, 1, 128), dtype="float32")
        c = np.zeros((1, 1, 128), dtype="float32")
        windows = audio.reshape(-1, num_samples)
        context = windows[..., -context_size_samples:]
        context[-1] = 0
        context = np.roll(context, 1, 0)
        windows = np.concatenate([context, windows], 1)
        outputs = []
        for lo in range(0, windows.shape[0], VAD_BLOCK_WINDOWS):
            output, h, c = self.session.run(None, {"input": windows[lo : lo + VAD_BLOCK_WINDOWS], "h": h, "c": c})
            outputs.append(output)
        return np.concatenate(outputs, axis=0)

    blocked._trax_blocked = True  # type: ignore[attr-defined]
    blocked.unbounded = unbounded  # type: ignore[attr-defined]
    SileroVADModel.__call__ = blocked
