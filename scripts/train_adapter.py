"""Snakemake script for rule train_adapter: dataset TSV -> LoRA adapter directory + metrics.json."""

from trax.adapters import train_adapter
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: train_adapter(
        dataset=snakemake.input.dataset,
        adapter_dir=snakemake.output.adapter,
        metrics_path=snakemake.output.metrics,
        domain=snakemake.wildcards.domain,
        settings=snakemake.params.settings,
    ),
)
