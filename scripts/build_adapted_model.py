"""Snakemake script for rule build_adapted_model: LoRA adapter -> merged CTranslate2 model directory."""

from trax.adapters import build_adapted_model
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: build_adapted_model(
        adapter_dir=snakemake.input.adapter,
        output_dir=snakemake.output.model,
        settings=snakemake.params.settings,
    ),
)
