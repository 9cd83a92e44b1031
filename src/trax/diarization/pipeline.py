"""The diarize stage: settings, model loading per backend, and the one function that both the
model server and the in-process path run (so their RTTM bytes agree).

Settings are the ``diarize`` config section as the rule passes it (see
:func:`DiarizeOptions.from_config`): the backend, thread count, speaker-count hints (already
overridden per file by the sample sheet) and the active backend's own section.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trax.io.annotation import Diarization, Turn, first_speech_labels, relabel_by_first_speech
from trax.diarization.embedded import SPEAKER_EMBEDDINGS, EmbeddedOptions
from trax.diarization.pyannote_backend import PyannoteOptions
from trax.errors import TraxError
from trax.io.jsonio import write_json_atomic, write_text_atomic
from trax.io.provenance import provenance, sha256_file
from trax.quality.estimates import diarization_confidence
from trax.quality.estimates import load_model as load_quality_model

log = logging.getLogger(__name__)

BACKENDS = ("embedded", "pyannote")


@dataclass(frozen=True)
class DiarizeOptions:
    """The ``diarize`` config section.

    Attributes:
        backend: ``embedded`` (offline default) or ``pyannote``.
        threads: torch threads for one pyannote job (the embedded backend runs numpy on one BLAS
            thread). Fixed from config, never from ``--cores``, so results do not depend on how a
            run was scheduled; 1 by default because two threads under CPU contention made the
            torch LSTM ~8x slower (OpenMP spinning).
        num_speakers: Exact number of speakers, or None (automatic).
        min_speakers: Lower bound on the automatic count, or None.
        max_speakers: Upper bound on the automatic count, or None.
        embedded: Settings of the embedded backend.
        pyannote: Settings of the pyannote backend.
    """

    backend: str = "embedded"
    threads: int = 1
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    embedded: EmbeddedOptions = field(default_factory=EmbeddedOptions)
    pyannote: PyannoteOptions = field(default_factory=PyannoteOptions)

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> DiarizeOptions:
        """Build options from a (possibly partial) ``diarize`` section."""
        values = dict(settings)
        if values.get("backend", "embedded") not in BACKENDS:
            raise TraxError("diarize.backend", f"unknown backend {values['backend']!r}; choose one of {BACKENDS}")
        embedded = EmbeddedOptions.from_config(values.pop("embedded", None) or {})
        pyannote = PyannoteOptions.from_config(values.pop("pyannote", None) or {})
        options = cls(**values, embedded=embedded, pyannote=pyannote)
        low, high = options.min_speakers, options.max_speakers
        if low is not None and high is not None and low > high:
            raise TraxError("diarize", f"min_speakers ({low}) is larger than max_speakers ({high})")
        return options

    def hints(self) -> dict[str, int | None]:
        """Speaker-count hints as keyword arguments."""
        return {"num_speakers": self.num_speakers, "min_speakers": self.min_speakers,
                "max_speakers": self.max_speakers}


def rule_settings(section: dict[str, Any], sample_options: dict[str, Any]) -> dict[str, Any]:
    """What the diarize rule passes as params: the config section with the sample sheet's
    ``num_speakers``/``min_speakers``/``max_speakers`` applied, and only the active backend's
    subsection (so changing the other backend's settings reruns nothing)."""
    settings = {key: value for key, value in section.items() if key not in BACKENDS and key != "enabled"}
    for key in ("num_speakers", "min_speakers", "max_speakers"):
        if sample_options.get(key) is not None:
            settings[key] = int(sample_options[key])
    backend = section.get("backend", "embedded")
    settings[backend] = section.get(backend, {})
    return settings


def fix_torch_threads(threads: int) -> None:
    """Run torch math on exactly ``threads`` threads and flush denormals (pyannote's advice;
    denormal floats made CPU inference many times slower). Process-wide, never restored."""
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def fix_threads(options: DiarizeOptions) -> None:
    """Pin this process's math for one diarize job: BLAS to one thread (numpy's products, the
    embedded encoder included, then give the same bits everywhere) and, for pyannote only, torch
    to ``options.threads`` (the embedded backend never imports torch)."""
    from trax.process import pin_blas_threads

    pin_blas_threads()
    if options.backend == "pyannote":
        fix_torch_threads(options.threads)


def load_models(options: DiarizeOptions) -> Any:
    """Load the backend's models (cached by the model server)."""
    if options.backend == "pyannote":
        from trax.diarization.pyannote_backend import load_pyannote

        return load_pyannote(options.pyannote)
    from trax.diarization.embedded import load_embedded_models

    return load_embedded_models()


def load_job_models(settings: dict[str, Any]) -> Any:
    """The backend's models for a job that runs without the model server, loaded in this process
    with its math pinned first (:func:`fix_threads`); ``settings`` as :func:`rule_settings` gives."""
    options = DiarizeOptions.from_config(settings)
    fix_threads(options)
    return load_models(options)


def run_backend(models: Any, wav_path: str, options: DiarizeOptions) -> tuple[list[Turn], dict[str, Any]]:
    """Diarize a normalized WAV with loaded models; return (turns, details).

    The embedded backend reads the audio piece by piece (:func:`trax.io.media.audio_pieces`), so its
    memory does not depend on the recording's length; pyannote's pipeline takes the whole waveform.
    """
    from trax.io.media import audio_pieces, load_wav, wav_duration

    if options.backend == "pyannote":
        from trax.diarization.pyannote_backend import diarize_pyannote

        return diarize_pyannote(models, load_wav(wav_path), options.pyannote, **options.hints())
    from trax.diarization.embedded import diarize_embedded

    return diarize_embedded(models, audio_pieces(wav_path), options.embedded, **options.hints(),
                            total_s=wav_duration(wav_path))


def diarize_wav(wav_path: str, sample_id: str, settings: dict[str, Any], models: Any) -> dict[str, Any]:
    """Diarize a normalized WAV with loaded models; return the serialized :class:`Diarization`.

    The one function both the in-process path and the model server run, so their bytes agree.
    """
    from trax.io.media import wav_duration

    options = DiarizeOptions.from_config(settings)
    fix_threads(options)
    turns, details = run_backend(models, wav_path, options)
    log.info("%s: %d turns, %d speakers", sample_id, len(turns), len({t.speaker for t in turns}))
    signals = details.pop("confidence_signals", None)
    labels = first_speech_labels(turns)
    vectors = details.pop(SPEAKER_EMBEDDINGS, None) or {}
    result = Diarization(
        sample_id=sample_id,
        duration=wav_duration(wav_path),
        backend=options.backend,
        turns=relabel_by_first_speech(turns),
        settings=settings,
        details=details,
        provenance=provenance(config=settings, input_sha256=sha256_file(wav_path), models=models.ids),
        embeddings={labels[label]: vector for label, vector in vectors.items() if label in labels},
        embedding_model=models.ids.get("embedding"),
    )
    data = result.serialize()
    quality = load_quality_model()
    share = data["speech_s"] / data["duration"] if data["duration"] > 0 else 0.0
    data["confidence"] = diarization_confidence(signals, labels, share, quality)
    data["provenance"]["quality_model"] = quality.provenance()
    return data


def diarize_file(
    wav_path: str,
    rttm_path: str,
    json_path: str,
    sample_id: str,
    settings: dict[str, Any],
    remote: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Diarize ``audio.wav`` into ``diarization.rttm`` and ``diarization.json``.

    Args:
        wav_path: ``audio.wav`` from normalize (relative to the workflow directory).
        rttm_path: Destination RTTM.
        json_path: Destination JSON (``workflow/schemas/diarization.schema.yaml``).
        sample_id: The recording's id (the RTTM uri).
        settings: The rule's params (see :func:`rule_settings`).
        remote: Runs a named request elsewhere and returns its result (the model server, passed
            in by the runtime); None loads the models in this process. Outputs are identical.
    """
    if remote is not None:
        log.info("diarizing %s via the model server", wav_path)
        data = remote("diarize", {"wav_path": wav_path, "sample_id": sample_id, "settings": settings})
    else:
        data = diarize_wav(wav_path, sample_id, settings, load_job_models(settings))
    from trax.io.schemas import validate

    validate(data, "diarization")  # before writing either file: no partial outputs
    write_text_atomic(rttm_path, Diarization.from_dict(data).rttm())
    write_json_atomic(json_path, data, schema="diarization")
    return data


__all__ = ["DiarizeOptions", "diarize_file", "diarize_wav", "rule_settings"]
