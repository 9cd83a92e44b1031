"""Speech to words.

* :mod:`~trax.asr.transcribe` — the fast pass (faster-whisper, VAD-first, in pieces).
* :mod:`~trax.asr.refine` — the refine stage: low-confidence spans re-decoded by a second model.
* :mod:`~trax.asr.domains` — domain detection, hotwords and prompts, glossaries.
* :mod:`~trax.asr.adapters`, :mod:`~trax.asr.ct2_hf` — LoRA adapters and their CTranslate2 export.
* :mod:`~trax.asr.models` — model specs: embedded package, local directory or hub name.

May import: io, quality and the top level. Never the runtime: a stage function that can hand its
model work to the model server takes a ``remote`` callable from the runtime instead.
"""
