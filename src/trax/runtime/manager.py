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
        kind: Model family (``whisper``, later ``diarization`` …).
        model: Resolved model name or directory.
        compute_type: CTranslate2/torch precision.
        device: ``cpu`` or ``cuda``.
        adapter: LoRA adapter directory, if any.
        revision: Size and mtime of the weights, so a model rebuilt in place is reloaded.
    """

    kind: str
    model: str
    compute_type: str
    device: str
    adapter: str | None = None
    revision: str = ""


@dataclass
class _Entry:
    key: ModelKey
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None
    loads: int = 0
    hits: int = 0
    resident_mb: float = 0.0
    last_used: int = 0


class ModelManager:
    """Thread-safe model cache with a memory budget.

    A model is loaded at most once while it stays resident: concurrent first requests for the same
    key wait on that key's lock instead of loading it again. After each load, least-recently-used
    models are unloaded until the resident total fits ``max_memory_mb`` (the model just loaded is
    always kept, even if it alone exceeds the budget).
    """

    def __init__(self, max_memory_mb: float) -> None:
        self.max_memory_mb = max_memory_mb
        self._lock = threading.Lock()
        self._entries: dict[ModelKey, _Entry] = {}
        self._clock = itertools.count(1)

    def get(self, key: ModelKey, loader: Callable[[], Any]) -> Any:
        """Return the model for ``key``, calling ``loader`` only if it is not resident."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(key))
        with entry.lock:
            if entry.model is None:
                before = process_rss_mb()
                entry.model = loader()
                entry.loads += 1
                entry.resident_mb = max(process_rss_mb() - before, 1.0)
                log.info("loaded %s (%.0f MB, load #%d)", key, entry.resident_mb, entry.loads)
                loaded = True
            else:
                entry.hits += 1
                loaded = False
            entry.last_used = next(self._clock)
            model = entry.model
        if loaded:
            self._enforce_budget(keep=key)
        return model

    def _enforce_budget(self, keep: ModelKey) -> None:
        with self._lock:
            resident = sorted((e for e in self._entries.values() if e.model is not None), key=lambda e: e.last_used)
            total = sum(e.resident_mb for e in resident)
            for entry in resident:
                if total <= self.max_memory_mb:
                    break
                if entry.key == keep:
                    continue
                # A request still using this model keeps its own reference until it finishes.
                log.info("unloading %s (%.0f MB) to fit %.0f MB", entry.key, entry.resident_mb, self.max_memory_mb)
                entry.model = None
                total -= entry.resident_mb
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
                }
                for e in self._entries.values()
            ]
