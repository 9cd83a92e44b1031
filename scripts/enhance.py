"""Snakemake script for rule enhance: merged.json -> enhanced.json + enhanced.md."""

from trax.enhance import enhance_files
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: enhance_files(
        merged_path=snakemake.input.merged,
        json_path=snakemake.output.json,
        md_path=snakemake.output.md,
        settings=snakemake.params.settings,
    ),
)
