"""Inputs, files and their contracts: what every stage reads and writes.

* :mod:`~trax.io.samples` — the ``inputs`` config key → stable, unique sample ids.
* :mod:`~trax.io.media` — ffmpeg probing and normalizing, WAV blocks, pieces of long recordings.
* :mod:`~trax.io.jsonio`, :mod:`~trax.io.schemas` — atomic, byte-stable, schema-checked JSON.
* :mod:`~trax.io.provenance` — the provenance block of every output.
* :mod:`~trax.io.cache` — the cache folder for files built once from installed packages.
* :mod:`~trax.io.annotation` — speaker turns, the diarization result, RTTM (one Turn type for all).

May import: the top level only (errors, console, progress, process).
"""
