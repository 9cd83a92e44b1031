"""Who spoke when, and whose voice it is.

* :mod:`~trax.diarization.pipeline` — settings, backend dispatch, the diarize stage itself.
* :mod:`~trax.diarization.embedded` — the offline backend (Silero VAD + resemblyzer + clustering).
* :mod:`~trax.diarization.pyannote_backend` — pyannote.audio pipelines (local directory or hub).
* :mod:`~trax.diarization.speakers` — voice profiles: enrollment, naming, linking across recordings.
* :mod:`~trax.diarization.setup` — install-time check that torchaudio imports beside this torch.

Turns and RTTM live in :mod:`trax.io.annotation`. May import: io, quality and the top level.
"""
