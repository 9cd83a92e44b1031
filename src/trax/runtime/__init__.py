"""How the workflow's jobs run (the only package that knows the model server exists).

* :mod:`~trax.runtime.jobs` — a rule's ``run:`` block → a stage function, in a thread or process.
* :mod:`~trax.runtime.step` — one job's logging and its one-line errors.
* :mod:`~trax.runtime.server`, :mod:`~trax.runtime.client`, :mod:`~trax.runtime.protocol` — the
  model server, how jobs reach it, and what they say to each other (where the server decides which
  model to load: :meth:`~trax.runtime.server.ModelServer.whisper`).
* :mod:`~trax.runtime.manager` — the server's model cache.
* :mod:`~trax.runtime.cluster` — runtime estimates for cluster executors.

May import: every stage package, io and the top level.
"""
