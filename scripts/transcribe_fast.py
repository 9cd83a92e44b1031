"""Snakemake script for rule transcribe_fast: audio.wav -> transcript.fast.json."""

from trax.step import run_step
from trax.transcribe import transcribe_file

run_step(
    snakemake.log[0],
    lambda: transcribe_file(
        wav_path=snakemake.input.wav,
        output_path=snakemake.output.transcript,
        sample_id=snakemake.wildcards.sample,
        settings=snakemake.params.settings,
    ),
)
