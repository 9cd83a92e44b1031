"""Snakemake script for rule metrics: benchmarks + results -> metrics.json."""

from trax.metrics import write_file_metrics
from trax.protocol import ServerSettings
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: write_file_metrics(
        sample_id=snakemake.wildcards.sample,
        inputs=dict(snakemake.input.items()),
        stages=snakemake.params.stages,
        output_path=snakemake.output.metrics,
        use_server=ServerSettings.from_env().enabled,
    ),
)
