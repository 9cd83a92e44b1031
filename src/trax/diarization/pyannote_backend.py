"""The pyannote.audio backend: a diarization pipeline from a local directory or the hub.

Audio is decoded by Trax and handed over as ``{"waveform", "sample_rate"}``, so pyannote never
needs torchcodec (whose PyPI wheels, like torchaudio's compiled extension, are CUDA-linked and do
not load beside the CPU torch). Telemetry is switched off (``PYANNOTE_METRICS_ENABLED=0``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trax.io.annotation import Turn
from trax.diarization.embedded import SPEAKER_EMBEDDINGS
from trax.errors import TraxError


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PyannoteOptions:
    """Settings of the pyannote backend (config ``diarize.pyannote``).

    Attributes:
        model: A local pipeline directory (holding ``config.yaml``, e.g. a downloaded
            ``pyannote/speaker-diarization-community-1`` snapshot) or a hub name (needs network
            and, for gated models, a token).
        token_env: Name of the environment variable holding the Hugging Face token (the token
            itself never goes into config or outputs).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
    """

    model: str | None = None
    token_env: str = "HF_TOKEN"
    device: str = "cpu"

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> PyannoteOptions:
        return cls(**settings)

    def source(self) -> PipelineSource:
        if not self.model:
            raise TraxError("diarize.pyannote.model", "the pyannote backend needs a model (a local pipeline directory or a hub name)")
        path = Path(os.path.expanduser(self.model))
        if path.exists() or self.model.startswith((".", "/", "~")):
            config = path / "config.yaml" if path.is_dir() else path
            if not config.is_file():
                raise TraxError(self.model, "not a pyannote pipeline (no config.yaml)")
            stat = config.stat()
            return PipelineSource(spec=self.model, name=str(path), path=path, revision=f"{stat.st_size}-{stat.st_mtime_ns}")
        return PipelineSource(spec=self.model, name=self.model, path=None, revision="")


@dataclass(frozen=True)
class PipelineSource:
    """A resolved pyannote pipeline: a local directory (``path``) or a hub name."""

    spec: str
    name: str
    path: Path | None
    revision: str

    def describe(self) -> dict[str, Any]:
        """Provenance: the spec, and for a local pipeline the sha256 of every weights file."""
        from trax.io.provenance import sha256_file

        entry: dict[str, Any] = {"spec": self.spec, "id": f"local:{Path(self.name).name}" if self.path else f"hub:{self.name}"}
        if self.path is not None and self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in (".bin", ".npz", ".yaml", ".safetensors", ".ckpt"))
            entry["files_sha256"] = {str(p.relative_to(self.path)): sha256_file(p) for p in files}
        return entry


@dataclass
class PyannoteModels:
    pipeline: Any
    ids: dict[str, Any]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_pyannote(options: PyannoteOptions) -> PyannoteModels:
    """Load the pipeline; a missing/invalid model or a refused download is a clear error."""
    os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
    import torch
    import warnings

    source = options.source()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torchcodec.*")
        from pyannote.audio import Pipeline

    token = os.environ.get(options.token_env) if options.token_env else None
    try:
        pipeline = Pipeline.from_pretrained(source.path if source.path is not None else source.name, token=token)
    except Exception as exc:  # pyannote/huggingface raise many types (HTTP, OS, KeyError in configs)
        raise TraxError(source.spec, f"cannot load pyannote pipeline ({type(exc).__name__}: {exc})") from None
    if pipeline is None:
        raise TraxError(source.spec, f"cannot load pyannote pipeline (gated or missing; set ${options.token_env})")
    pipeline.to(torch.device(resolve_device(options.device)))
    ids: dict[str, Any] = {"diarization": source.describe()}
    embedding = embedding_model_id(pipeline, source)
    if embedding is not None:
        ids["embedding"] = embedding
    return PyannoteModels(pipeline=pipeline, ids=ids)


def diarize_pyannote(
    models: PyannoteModels,
    audio: np.ndarray,
    options: PyannoteOptions,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
) -> tuple[list[Turn], dict[str, Any]]:
    """Run the pipeline on 16 kHz mono float32 ``audio``; return (turns, details)."""
    import torch

    if len(audio) == 0:
        return [], {"reason": "no audio"}
    waveform = torch.from_numpy(audio.copy()).unsqueeze(0)
    hints = {k: v for k, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                                 ("max_speakers", max_speakers)) if v is not None}
    output = models.pipeline({"waveform": waveform, "sample_rate": 16000}, **hints)
    # pyannote.audio 4 returns DiarizeOutput; 3.x pipelines return the Annotation itself.
    annotation = getattr(output, "speaker_diarization", output)
    turns = [Turn(float(segment.start), float(segment.end), str(label))
             for segment, _, label in annotation.itertracks(yield_label=True)]
    details: dict[str, Any] = {"pipeline": type(models.pipeline).__name__}
    # pyannote 4: one centroid per speaker, in the order of annotation.labels() (all zeros for a
    # speaker the clustering did not produce: no voice to keep).
    centroids = getattr(output, "speaker_embeddings", None)
    if centroids is not None and "embedding" in models.ids:
        details[SPEAKER_EMBEDDINGS] = {str(label): vector for label, vector in zip(annotation.labels(), centroids)
                                       if np.isfinite(vector).all() and np.abs(vector).sum() > 0}
    return turns, details


def embedding_model_id(pipeline: Any, source: PipelineSource) -> dict[str, Any] | None:
    """``{"id", "weights_sha256"}`` of the pipeline's speaker-embedding model (None when it has
    none): the id names the pipeline and its embedding entry; the hash is of the embedding
    weights file for a local pipeline, or of the entry's name for a hub one."""
    import hashlib

    from trax.io.provenance import sha256_file

    if getattr(pipeline, "_embedding", None) is None:
        return None
    spec = str(getattr(pipeline, "embedding", "") or "")
    weights = None
    if source.path is not None:
        candidates = sorted((source.path / "embedding").glob("*.bin")) + sorted((source.path / "embedding").glob("*.safetensors"))
        weights = candidates[0] if candidates else None
    digest = sha256_file(weights) if weights else hashlib.sha256(spec.encode()).hexdigest()
    name = f"local:{source.path.name}" if source.path is not None else f"hub:{source.name}"
    return {"id": f"pyannote {name} embedding", "weights_sha256": digest}


def embed_pyannote(models: PyannoteModels, audio: np.ndarray) -> np.ndarray:
    """The pipeline's speaker embedding of 16 kHz mono float32 ``audio`` (one vector), for
    enrollment: the same model, so profiles and diarized speakers are comparable."""
    import torch

    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]
    with torch.inference_mode():
        return np.asarray(models.pipeline._embedding(waveform), dtype=np.float64)[0]
