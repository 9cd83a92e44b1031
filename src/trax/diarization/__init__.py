"""Speaker diarization: who spoke when.

* :mod:`trax.diarization.annotation` — turns, the diarization result, RTTM writer/reader (I/O).
* :mod:`trax.diarization.embedded` — the offline backend (Silero VAD + resemblyzer + clustering).
* :mod:`trax.diarization.pyannote_backend` — pyannote.audio pipelines (local directory or hub).
* :mod:`trax.diarization.pipeline` — settings, backend dispatch, the diarize stage itself.
* :mod:`trax.diarization.setup` — install-time check that torchaudio imports beside this torch.
"""
