"""Trax: a reproducible, file-based speech pipeline.

The package holds all library code; the Snakemake rules call it through thin scripts in
``scripts/``. Modules, one concern each:

* :mod:`trax.samples` — turn the ``inputs`` config key into stable, unique sample ids.
* :mod:`trax.media` — locate ffmpeg, probe sources, normalize them to 16 kHz mono PCM.
* :mod:`trax.models` — resolve model specs (embedded package, local directory, hub name).
* :mod:`trax.transcribe` — faster-whisper decoding into typed, serializable transcripts.
* :mod:`trax.evaluation` — text normalization and WER, shared by tests and benchmarks.
* :mod:`trax.jsonio`, :mod:`trax.schemas`, :mod:`trax.provenance` — byte-stable output files.
* :mod:`trax.step` — the error and log handling every rule script shares.
"""

__version__ = "0.1.0"
