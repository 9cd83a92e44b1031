"""Who spoke when, and whose voice it is.

* :mod:`~trax.diarization.pipeline` — settings, backend dispatch, the diarize stage itself.
* :mod:`~trax.diarization.embedded` — the offline backend (Silero VAD + resemblyzer + clustering).
* :mod:`~trax.diarization.encoder` — resemblyzer's voice encoder in ONNX Runtime, features in numpy (no torch).
* :mod:`~trax.diarization.pyannote_backend` — pyannote.audio pipelines (local directory or hub).
* :mod:`~trax.diarization.speakers` — voice profiles: enrollment, naming, linking across recordings.
* :mod:`~trax.diarization.setup` — install time: export the voice encoder's weights; make torchaudio import beside this torch.

Turns and RTTM live in :mod:`trax.io.annotation`. May import: io, quality and the top level.
"""
