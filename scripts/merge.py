"""Snakemake script for rule merge: transcript.refined.json + diarization.rttm -> merged.json."""

from trax.merge import merge_files
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: merge_files(
        transcript_path=snakemake.input.transcript,
        rttm_path=snakemake.input.rttm,
        output_path=snakemake.output.merged,
        settings=snakemake.params.settings,
        speaker_names=snakemake.params.speaker_names,
    ),
)
