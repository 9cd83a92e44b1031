"""Snakemake script for rule normalize: source -> audio.wav + audio.json."""

from trax.media import NormalizeOptions, normalize
from trax.step import run_step

run_step(
    snakemake.log[0],
    lambda: normalize(
        source=snakemake.params.source,
        wav_path=snakemake.output.wav,
        info_path=snakemake.output.info,
        sample_id=snakemake.wildcards.sample,
        options=NormalizeOptions(**snakemake.params.settings),
    ),
)
