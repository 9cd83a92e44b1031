# Trax: reproducible speech pipeline. See README.md and config/README.md.
import os

from snakemake.utils import min_version

min_version("9.0")

# Jobs import the trax package from this checkout, also inside --use-conda environments.
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [f"{workflow.basedir}/src", os.getenv("PYTHONPATH")])))


configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/normalize.smk"
include: "workflow/rules/transcribe.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/diarize.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/speakers.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/review.smk"
include: "workflow/rules/enhance.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/adapters.smk"


report: "workflow/report/workflow.rst"


onstart:
    start_model_server(log)


onsuccess:
    cancel_scheduler_timers()


onerror:
    cancel_scheduler_timers()


rule all:
    input:
        all_outputs,
    default_target: True
