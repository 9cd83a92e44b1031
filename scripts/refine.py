"""Snakemake script for rule refine: transcript.fast.json + audio.wav -> transcript.refined.json."""

from trax.refine import refine_file
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: refine_file(
        wav_path=snakemake.input.wav,
        fast_path=snakemake.input.fast,
        output_path=snakemake.output.transcript,
        settings=snakemake.params.settings,
        domains=snakemake.params.domains,
        sample_domain=snakemake.params.sample_domain,
    ),
)
