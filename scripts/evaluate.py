"""Snakemake script for rule evaluate: transcripts (+ RTTM) vs the sample sheet's references -> evaluation.json."""

from trax.evaluation import evaluate_file
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: evaluate_file(
        sample_id=snakemake.wildcards.sample,
        transcripts={name: snakemake.input[f"transcript_{name}"] for name in snakemake.params.transcripts},
        output_path=snakemake.output.evaluation,
        settings=snakemake.params.settings,
        hypothesis_rttm=snakemake.input.get("hypothesis_rttm"),
        **snakemake.params.references,
    ),
)
