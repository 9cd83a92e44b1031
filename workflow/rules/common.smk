# Helpers shared by all rules: config validation, sample discovery, input functions.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from trax.errors import TraxError
from trax.samples import SAMPLE_ID_PATTERN, discover, read_sheet, SHEET_EXTENSIONS


validate(config, "../schemas/config.schema.yaml")


def load_samples():
    """Discover samples from config['inputs']; validate a sample sheet against its schema."""
    entries = config["inputs"] if isinstance(config["inputs"], list) else [config["inputs"]]
    for entry in entries:
        if os.path.splitext(entry)[1].lower() in SHEET_EXTENSIONS and os.path.isfile(entry):
            validate(read_sheet(Path(entry)), "../schemas/samples.schema.yaml")
    try:
        return {sample.id: sample for sample in discover(config["inputs"])}
    except TraxError as exc:
        raise WorkflowError(f"trax: error: {exc}")


SAMPLES = load_samples()


wildcard_constraints:
    sample=SAMPLE_ID_PATTERN,


def sample_of(wildcards):
    """The Sample for a {sample} wildcard; an unknown id is a clear error, not a missing-input puzzle."""
    try:
        return SAMPLES[wildcards.sample]
    except KeyError:
        raise WorkflowError(
            f"trax: error: unknown sample id '{wildcards.sample}'; known ids: {', '.join(SAMPLES) or '(none)'}"
        )


def source_file(wildcards):
    """normalize's input: the source when it exists. A missing source is reported by the job
    itself (one line, that file only) so the other recordings still run with --keep-going."""
    path = sample_of(wildcards).path
    return [path] if os.path.exists(path) else []


def source_path(wildcards):
    return sample_of(wildcards).path


def transcribe_fast_settings(wildcards):
    """The transcribe_fast config section, with a per-file language from the sample sheet."""
    settings = dict(config["transcribe_fast"])
    language = sample_of(wildcards).options.get("language")
    if language:
        settings["language"] = language
    return settings


def all_outputs(wildcards):
    return expand("results/{sample}/transcript.fast.json", sample=SAMPLES)
