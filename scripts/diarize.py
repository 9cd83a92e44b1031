"""Snakemake script for rule diarize: audio.wav -> diarization.rttm + diarization.json."""

from trax.diarization.pipeline import diarize_file
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: diarize_file(
        wav_path=snakemake.input.wav,
        rttm_path=snakemake.output.rttm,
        json_path=snakemake.output.json,
        sample_id=snakemake.wildcards.sample,
        settings=snakemake.params.settings,
    ),
)
