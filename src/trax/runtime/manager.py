"""ModelManager: loaded models cached by key, loaded once, unloaded least-recently-used first."""

from __future__ import annotations

import gc
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from trax.process import process_rss_mb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What makes two loaded models interchangeable.

    Attributes:
        kind: Model family (``whisper``, ``diarize``).
        model: Resolved model name or directory.
        compute_type: CTranslate2/torch precision.
        device: ``cpu`` or ``cuda``.
        adapter: LoRA adapter directory, if any.
        revision: Size and mtime of the weights, so a model rebuilt in place is reloaded.
        threads: CPU threads the model was loaded with (CTranslate2 fixes them at load); 0 when
            the model takes its threads per call.
    """

    kind: str
    model: str
    compute_type: str
    device: str
    adapter: str | None = None
    revision: str = ""
    threads: int = 0


@dataclass
class _Entry:
    key: ModelKey
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None
    loads: int = 0
    hits: int = 0
    resident_mb: float = 0.0
    weights_mb: float | None = None
    load_delta_mb: float = 0.0
    last_used: int = 0


class ModelManager:
    """Thread-safe model cache with a memory budget.

    A model is loaded at most once while it stays resident: concurrent first requests for the same
    key wait on that key's lock instead of loading it again. After each load, least-recently-used
    models are unloaded until the resident total fits ``max_memory_mb`` (the model just loaded is
    always kept, even if it alone exceeds the budget).

    Memory accounting: a model counts as its weights' size on disk when the caller knows it (the
    same figure on every load, whatever else the process does), else as the growth of the process's
    resident memory across its load. Loads run one at a time (never two loads in one delta; decodes
    may still run beside them), which also keeps a torch-free model load from racing a torch import.

    Unloading happens under the entry's lock, non-blocking: an entry being loaded or handed out at
    that moment is skipped (it is in use), so :meth:`get` never returns an unloaded model. A request
    that already holds a model keeps its own reference until it finishes.
    """

    def __init__(self, max_memory_mb: float) -> None:
        self.max_memory_mb = max_memory_mb
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._entries: dict[ModelKey, _Entry] = {}
        self._clock = itertools.count(1)

    def get(self, key: ModelKey, loader: Callable[[], Any], size_mb: float | None = None) -> Any:
        """Return the model for ``key``, calling ``loader`` only if it is not resident.

        Args:
            key: The model's cache key.
            loader: Loads it.
            size_mb: Its weights' size on disk (see the class notes); None to measure the load.
        """
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(key))
        with entry.lock:
            if entry.model is None:
                with self._load_lock:
                    before = process_rss_mb()
                    model = loader()
                    entry.load_delta_mb = max(process_rss_mb() - before, 0.0)
                entry.model = model
                entry.loads += 1
                entry.weights_mb = size_mb
                entry.resident_mb = max(size_mb if size_mb is not None else entry.load_delta_mb, 1.0)
                log.info("loaded %s (%.0f MB counted; weights %s MB, load delta %.0f MB; load #%d)", key,
                         entry.resident_mb, "?" if size_mb is None else f"{size_mb:.0f}", entry.load_delta_mb,
                         entry.loads)
                loaded = True
            else:
                entry.hits += 1
                loaded = False
            entry.last_used = next(self._clock)
            model = entry.model
        if loaded:
            self._enforce_budget(keep=key)
        return model

    def unload(self, key: ModelKey) -> bool:
        """Drop ``key``'s model now, waiting for its lock; True when one was resident."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return False
        with entry.lock:
            resident = entry.model is not None
            entry.model = None
        return resident

    def _enforce_budget(self, keep: ModelKey) -> None:
        unloaded = False
        with self._lock:
            resident = sorted((e for e in self._entries.values() if e.model is not None), key=lambda e: e.last_used)
            total = sum(e.resident_mb for e in resident)
            for entry in resident:
                if total <= self.max_memory_mb:
                    break
                if entry.key == keep or not entry.lock.acquire(blocking=False):
                    continue  # the model just loaded, or one being loaded/handed out right now
                try:
                    if entry.model is None:
                        continue
                    log.info("unloading %s (%.0f MB) to fit %.0f MB", entry.key, entry.resident_mb,
                             self.max_memory_mb)
                    entry.model = None
                    total -= entry.resident_mb
                    unloaded = True
                finally:
                    entry.lock.release()
        if unloaded:
            gc.collect()

    def stats(self) -> list[dict[str, Any]]:
        """Per-model load counts, cache hits and resident memory (unloaded models included)."""
        with self._lock:
            return [
                {
                    "key": asdict(e.key),
                    "loads": e.loads,
                    "hits": e.hits,
                    "resident": e.model is not None,
                    "resident_mb": round(e.resident_mb, 1) if e.model is not None else 0.0,
                    "weights_mb": None if e.weights_mb is None else round(e.weights_mb, 1),
                    "load_delta_mb": round(e.load_delta_mb, 1),
                }
                for e in self._entries.values()
            ]
