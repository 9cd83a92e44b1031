"""Snakemake script for rule export: merged.json -> transcript.srt / .vtt / .txt / .md."""

from trax.exports import export_files
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: export_files(
        merged_path=snakemake.input.merged,
        outputs={fmt: getattr(snakemake.output, fmt) for fmt in ("srt", "vtt", "txt", "md")},
        settings=snakemake.params.settings,
    ),
)
