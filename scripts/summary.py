"""Snakemake script for rule summary: every metrics.json / evaluation.json -> summary tables."""

from trax.metrics import write_summary
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: write_summary(
        metrics_paths=snakemake.input.metrics,
        evaluation_paths=snakemake.input.evaluations,
        targets=snakemake.params.targets,
        summary_tsv=snakemake.output.summary,
        aggregate_tsv=snakemake.output.aggregate,
        targets_tsv=snakemake.output.targets,
        evaluation_tsv=snakemake.output.evaluation,
        html_path=snakemake.output.html,
    ),
)
