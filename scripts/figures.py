"""Snakemake script for rule figures: final transcript (+ RTTM) -> report figures."""

from trax.figures import make_figures
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: make_figures(
        sample_id=snakemake.wildcards.sample,
        transcript_json=snakemake.input.transcript,
        audio_json=snakemake.input.audio,
        rttm=snakemake.input.get("rttm"),
        timeline=snakemake.output.timeline,
        confidence=snakemake.output.confidence,
        preview=snakemake.output.preview,
        max_segments=snakemake.params.preview_segments,
    ),
)
