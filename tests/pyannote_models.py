"""Build a tiny, randomly initialised pyannote.audio pipeline on disk (no download, no token).

The layout is that of a downloaded ``speaker-diarization-community-1`` snapshot: ``config.yaml``,
``segmentation/pytorch_model.bin`` (PyanNet), ``embedding/pytorch_model.bin`` (WeSpeakerResNet34)
and ``plda/{xvec_transform,plda}.npz`` (a synthetic but well-conditioned PLDA). Its output is
meaningless; it exercises pyannote's real loading and inference code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

EMBEDDING_DIM = 256
LDA_DIM = 128


def _save(model, specifications, path: Path) -> None:
    import lightning
    import torch
    from pyannote.audio import __version__

    model.specifications = specifications
    model.setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "pyannote.audio": {
                "versions": {"pyannote.audio": __version__},
                "architecture": {"module": type(model).__module__, "class": type(model).__name__},
                "specifications": specifications,
            },
        },
        path,
    )


def build_pipeline(directory: Path, seed: int = 0) -> Path:
    """Write a random-weights diarization pipeline into ``directory`` and return it."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    segmentation = PyanNet(sincnet={"stride": 10})
    _save(
        segmentation,
        Specifications(problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=10.0,
                       classes=["speaker#1", "speaker#2", "speaker#3"], powerset_max_classes=2,
                       permutation_invariant=True),
        directory / "segmentation" / "pytorch_model.bin",
    )
    embedding = WeSpeakerResNet34()
    _save(
        embedding,
        Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0),
        directory / "embedding" / "pytorch_model.bin",
    )
    rng = np.random.default_rng(seed)
    plda = directory / "plda"
    plda.mkdir(parents=True, exist_ok=True)
    lda, _ = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, LDA_DIM)))
    np.savez(plda / "xvec_transform.npz", mean1=np.zeros(EMBEDDING_DIM), mean2=np.zeros(LDA_DIM), lda=lda)
    tr, _ = np.linalg.qr(rng.standard_normal((LDA_DIM, LDA_DIM)))
    np.savez(plda / "plda.npz", mu=np.zeros(LDA_DIM), tr=tr, psi=np.linspace(2.0, 0.1, LDA_DIM))
    config = {
        "dependencies": {"pyannote.audio": "4.0.0"},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "clustering": "VBxClustering",
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "segmentation_batch_size": 8,
                "embedding_batch_size": 8,
                "embedding_exclude_overlap": True,
            },
        },
        "params": {
            "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
            "segmentation": {"min_duration_off": 0.0},
        },
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return directory
