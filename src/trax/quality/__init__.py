"""How good is it: calibrated estimates, and measurement against references.

* :mod:`~trax.quality.estimates` — estimated WER, diarization confidence, review flags, from a
  model shipped as data (``data/quality_model.json``); nothing is fitted at run time.
* :mod:`~trax.quality.evaluation` — text normalization, WER and DER against references.
* :mod:`~trax.quality.benchdata` — the benchmark corpus beside the checkout (tests and bench/).

May import: io and the top level.
"""
