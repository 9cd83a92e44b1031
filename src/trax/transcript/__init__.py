"""Speaker-attributed transcripts and what is made from them.

* :mod:`~trax.transcript.merge` — speaker on every word, utterances → ``merged.json``.
* :mod:`~trax.transcript.exports` — SRT, VTT, TXT and Markdown (where subtitles are cut).
* :mod:`~trax.transcript.enhance` — the enhance stage → ``enhanced.json`` + ``enhanced.md``;
  its providers: :mod:`~trax.transcript.rules` (offline) and :mod:`~trax.transcript.llm`
  (OpenAI-compatible API, falling back to the rules).

May import: io, quality, diarization (speaker profiles name merged speakers) and the top level.
"""
