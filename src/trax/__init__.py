"""Trax: a reproducible, file-based speech pipeline.

Subpackages by stage; imports flow one way, runtime → stages → io (``bench/imports.py`` checks it):

* :mod:`trax.io` — inputs, files and their contracts: media, JSON, schemas, provenance, RTTM.
* :mod:`trax.asr` — speech to words: the fast pass, refinement, domains, adapters, model specs.
* :mod:`trax.diarization` — who spoke when, and whose voice it is (profiles, linking).
* :mod:`trax.transcript` — speaker-attributed transcripts: merge, exports, enhancement.
* :mod:`trax.quality` — calibrated quality estimates, evaluation against references, benchdata.
* :mod:`trax.report` — per-recording metrics, the summary and the report's figures.
* :mod:`trax.runtime` — how jobs run: the model server and its client, the model cache, jobs.

Top level, used by all and importing nothing else of trax: :mod:`trax.errors`,
:mod:`trax.console`, :mod:`trax.progress`, :mod:`trax.process` (threads and memory of this process).
"""

__version__ = "0.1.0"
