"""What a run reports: ``metrics.json``, ``summary.tsv`` and the tables and figures of the report.

* :mod:`~trax.report.metrics` — per-recording metrics and the summary tables.
* :mod:`~trax.report.figures` — speaker timeline, confidence histogram, transcript preview.

May import: io, quality and the top level. The model server's statistics are passed in.
"""
