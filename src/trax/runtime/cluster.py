"""Helpers for running the workflow on a cluster (Slurm through Snakemake's executor plugin)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

#: Bytes per second of ``results/<id>/audio.wav`` (16 kHz mono 16-bit PCM).
WAV_BYTES_PER_S = 32000


def audio_runtime(base_min: int, per_audio_hour_min: int) -> Callable[[Any, Any], int]:
    """A Snakemake ``runtime`` resource (minutes) for a rule whose ``input.wav`` is a normalized WAV.

    Args:
        base_min: Minutes for any recording.
        per_audio_hour_min: Minutes added per hour of audio (from the WAV's size), so that a
            cluster's time limit does not cut off long recordings.

    Returns:
        A resource function of ``(wildcards, input)``. Snakemake evaluates it when the job is
        submitted, after normalize wrote the WAV; before that (a dry run) it gives ``base_min``.
    """

    def runtime(wildcards: Any, input: Any) -> int:
        try:
            hours = os.path.getsize(input.wav) / WAV_BYTES_PER_S / 3600
        except FileNotFoundError:
            hours = 0.0
        return base_min + math.ceil(hours * per_audio_hour_min)

    return runtime
