# Helpers shared by all rules: config validation, sample discovery, input functions.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from trax.asr.domains import load_domains
from trax.errors import TraxError
from trax.runtime.client import server_stats
from trax.runtime.jobs import run_job, run_model_job
from trax.io.media import NormalizeOptions
from trax.runtime.protocol import SETTINGS_ENV, ServerSettings
from trax.io.samples import SAMPLE_ID_PATTERN, discover, read_sheet, SHEET_EXTENSIONS
from trax.asr.adapters import DOMAIN_PATTERN, dataset_audio_files
from trax.runtime.cluster import audio_runtime
from trax.asr.refine import is_model_path
from trax.io.languages import check_language


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

try:
    check_language(config["transcribe_fast"]["language"], "config transcribe_fast.language")
except TraxError as exc:
    raise WorkflowError(f"trax: error: {exc}")

# Server settings change no output byte, so they reach jobs through the environment, not params
# (a params change would rerun jobs for nothing).
SERVER = ServerSettings(**config["server"])
os.environ[SETTINGS_ENV] = SERVER.to_env()
#: Rules whose jobs send model work to the server.
MODEL_RULES = {"transcribe_fast", "refine", "diarize", "enroll_speakers"}


def domains_folder():
    """refine.domains_dir, or the workflow's own config/domains when it is null."""
    return config["refine"]["domains_dir"] or os.path.join(workflow.basedir, "config", "domains")


try:
    #: Domain definitions by name. Passed to refine as params, so editing a domain file reruns it.
    DOMAINS = load_domains(domains_folder())
except TraxError as exc:
    raise WorkflowError(f"trax: error: {exc}")


wildcard_constraints:
    sample=SAMPLE_ID_PATTERN,
    domain=DOMAIN_PATTERN,


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
        try:
            settings["language"] = check_language(str(language), f"sample sheet: {wildcards.sample}: language")
        except TraxError as exc:
            raise WorkflowError(f"trax: error: {exc}")
    return settings


def sample_domain(wildcards):
    """The sample sheet's domain for this file, or None (then refine.domain decides)."""
    domain = sample_of(wildcards).options.get("domain")
    if domain and domain != "auto" and domain not in DOMAINS:
        raise WorkflowError(
            f"trax: error: {wildcards.sample}: unknown domain '{domain}' in the sample sheet; known: {', '.join(DOMAINS)}"
        )
    return domain


def diarize_settings(wildcards):
    """The diarize config section with per-file num/min/max_speakers from the sample sheet and
    only the active backend's subsection (see trax.diarization.pipeline.rule_settings)."""
    from trax.diarization.pipeline import rule_settings

    return rule_settings(config["diarize"], sample_of(wildcards).options)


def speaker_names(wildcards):
    """The sample sheet's speaker_names cell (SPEAKER_1=Alice;SPEAKER_2=Bob) or None."""
    return sample_of(wildcards).options.get("speaker_names")


def enhance_settings():
    """The enhance section without the settings of the provider not in use, so that changing
    e.g. the openai model reruns nothing while the rules provider is selected."""
    settings = {key: value for key, value in config["enhance"].items() if key not in ("rules", "openai")}
    settings["rules"] = config["enhance"]["rules"]  # also the openai provider's fallback
    if settings["provider"] == "openai":
        settings["openai"] = config["enhance"]["openai"]
    return settings


def model_threads(rule_threads):
    """Threads a model job claims: 1 when the server does the work (its own worker pool bounds
    the decoding), else the decode's own CPU threads."""
    return 1 if SERVER.enabled else rule_threads


def start_model_server(log):
    """onstart hook: when this run has model jobs, start the server and warm the models those jobs
    use (the fast model, the diarizer) in the background, so loading overlaps with normalize
    instead of stalling the first jobs. Zero-job and dry runs never get here. Under a cluster
    executor (Slurm) jobs run on other nodes: the first model job on each node starts that node's
    server, none is started where Snakemake itself runs."""
    if workflow.non_local_exec:
        return
    rules = {job.rule.name for job in workflow.dag.needrun_jobs()}
    if not SERVER.enabled or not rules & MODEL_RULES:
        return
    from trax.runtime.client import start_in_background
    from trax.diarization.pipeline import rule_settings

    warm = [{"settings": config["transcribe_fast"]}] if "transcribe_fast" in rules else []
    # The multilingual model is warmed only when a language other than English is configured (in
    # config or the sample sheet); a detected one loads it on first use, so English runs never pay.
    fast = config["transcribe_fast"]
    languages = {fast["language"], *(sample.options.get("language") for sample in SAMPLES.values())}
    if "transcribe_fast" in rules and fast["multilingual_model"] and languages - {None, "", "en"}:
        warm.append({"settings": {**fast, "model": fast["multilingual_model"]}})
    if rules & {"diarize", "enroll_speakers"}:
        warm.append({"diarize": rule_settings(config["diarize"], {})})
    # The refine model is warmed only in combine mode, which decodes all speech again; the span
    # mode re-decodes little or nothing, and its model loads on first use.
    if "refine" in rules and config["refine"]["enabled"] and config["refine"]["mode"] == "combine":
        from trax.asr.refine import RefineOptions

        warm.append({"settings": RefineOptions.from_config(config["refine"]).decode_settings()})
    start_in_background(SERVER, warm=warm)


def cancel_scheduler_timers():
    """onsuccess/onerror hook: cancel the scheduler's pending re-evaluation timers. Snakemake arms a
    non-daemon threading.Timer of --max-jobs-per-timespan's span (1 s by default) after each
    scheduling round, and Python waits for the last one before it exits: every run lasted ~1 s
    longer than its jobs. Once the run has ended nothing is left to re-evaluate."""
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer) and "_schedule_reevalutation" in getattr(thread.function, "__qualname__", ""):
            thread.cancel()


def runtime_min(name):
    """A rule's time limit in minutes (resource ``runtime``: Slurm's --time): resources.<name>_runtime_min."""
    return config["resources"][f"{name}_runtime_min"]


def audio_runtime_min(name):
    """Time limit (minutes) for decoding ``input.wav``, i.e. the base plus resources.runtime_min_per_audio_hour
    per hour of audio, so hours-long recordings are not killed by the cluster."""
    return audio_runtime(runtime_min(name), config["resources"]["runtime_min_per_audio_hour"])


#: Whether recordings are diarized (diarize.enabled); without it merge gives every word one speaker.
DIARIZED = config["diarize"]["enabled"]
#: Per-file stages, in pipeline order, whose benchmark TSVs feed metrics.json.
STAGES = [stage for stage in ["normalize", "transcribe_fast", "refine", "diarize", "merge", "export", "enhance"]
          if stage != "diarize" or DIARIZED]
#: Transcript stages in pipeline order; the last one is the final transcript (scored, plotted).
TRANSCRIPTS = {"fast": "results/{sample}/transcript.fast.json", "refined": "results/{sample}/transcript.refined.json"}
FINAL_TRANSCRIPT = list(TRANSCRIPTS.values())[-1]
#: Sample sheet columns that name reference files for the evaluate rule.
REFERENCE_COLUMNS = ("reference_text", "reference_rttm", "reference_uem")


def references_of(sample):
    """Reference files a sample's sheet row names (column -> path)."""
    return {column: sample.options[column] for column in REFERENCE_COLUMNS if sample.options.get(column)}


EVALUATED = [sample_id for sample_id, sample in SAMPLES.items() if references_of(sample)]


def evaluate_inputs(wildcards):
    """Transcripts to score, this run's RTTM when a reference RTTM is given, and the reference
    files that exist (so editing a reference reruns evaluate; a missing one fails that job only)."""
    references = references_of(sample_of(wildcards))
    inputs = {f"transcript_{name}": path for name, path in TRANSCRIPTS.items()}
    inputs["merged"] = "results/{sample}/merged.json"
    if "reference_rttm" in references and DIARIZED:
        inputs["hypothesis_rttm"] = "results/{sample}/diarization.rttm"
    inputs.update({column: path for column, path in references.items() if os.path.exists(path)})
    return inputs


def evaluate_references(wildcards):
    return references_of(sample_of(wildcards))


def merge_inputs(wildcards):
    """The final transcript; when recordings are diarized the RTTM and diarization.json (confidence,
    speaker embeddings); with speaker profiles the profile store (so a rebuilt store reruns merge)."""
    inputs = {"transcript": FINAL_TRANSCRIPT}
    if DIARIZED:
        inputs.update(rttm="results/{sample}/diarization.rttm", diarization="results/{sample}/diarization.json")
        if PROFILES:
            inputs["profiles"] = PROFILE_STORE
    return inputs


def merge_arguments(input, output, params):
    """trax.transcript.merge.merge_files's arguments from the merge job (the optional inputs may be absent)."""
    return dict(
        transcript_path=input.transcript,
        rttm_path=input.get("rttm"),
        output_path=output.merged,
        settings=params.settings,
        speaker_names=params.speaker_names,
        diarization_path=input.get("diarization"),
        profiles_path=input.get("profiles"),
        speaker_settings=params.speakers,
        quality=params.quality,
    )


#: The enrollment table (speakers.profiles) or None; its store, built by rule enroll_speakers.
PROFILES = config["speakers"]["profiles"]
PROFILE_STORE = "results/speakers/profiles.json"
#: What identification in merge depends on (link_threshold is linking's alone).
IDENTIFY_SETTINGS = {key: config["speakers"][key] for key in ("threshold", "ambiguous_margin")} if PROFILES else None


def enrollment_table(wildcards):
    if not PROFILES:
        raise WorkflowError("trax: error: speakers.profiles is not set: no enrollment table to build profiles from")
    return PROFILES


def enrollment_audio(wildcards):
    """The clips the table names, so a changed clip rebuilds the store (missing ones are left to
    the job, which reports the first with its row in one line)."""
    from trax.diarization.speakers import enrollment_audio_files

    return enrollment_audio_files(PROFILES)


def enroll_server():
    """The model server for enroll_speakers when it may read the table and every clip (all inside
    the workflow directory, as the example's are): its diarizer is loaded once for enrollment and
    the recordings. None otherwise: the job loads the model in its own process."""
    from pathlib import Path

    from trax.diarization.speakers import enrollment_audio_files
    from trax.runtime.server import may_serve

    directory = Path.cwd().resolve()
    paths = [PROFILES, *enrollment_audio_files(PROFILES)]
    return SERVER if all(may_serve(path, directory) for path in paths) else None


#: Settings of the embedded backend that shape an embedding (the clustering ones do not).
EMBEDDING_KEYS = ("vad_threshold", "vad_min_silence_ms", "vad_pad_ms", "window_s", "hop_s", "speech_dbfs")


def enroll_settings():
    """The diarize settings enrollment embeds with: the backend, its threads and the part of its
    section that shapes an embedding, so a clustering change does not rebuild the profiles."""
    backend = config["diarize"]["backend"]
    section = dict(config["diarize"][backend])
    if backend == "embedded":
        section = {key: value for key, value in section.items() if key in EMBEDDING_KEYS}
    return {"backend": backend, "threads": config["diarize"]["threads"], backend: section}


def enroll_speaker_settings():
    return {"min_speech_s": config["speakers"]["min_speech_s"]}


def link_settings():
    """The speakers section without the table path (the store is an input)."""
    return {key: value for key, value in config["speakers"].items() if key != "profiles"}


def link_inputs(wildcards):
    inputs = {"diarizations": expand("results/{sample}/diarization.json", sample=sorted(SAMPLES))}
    if PROFILES:
        inputs["store"] = PROFILE_STORE
    return inputs


def figure_inputs(wildcards):
    transcript = "results/{sample}/merged.json" if "merge" in STAGES else FINAL_TRANSCRIPT
    inputs = {"transcript": transcript, "audio": "results/{sample}/audio.json"}
    if "diarize" in STAGES:
        inputs["rttm"] = "results/{sample}/diarization.rttm"
    return inputs


def metrics_inputs(wildcards):
    inputs = {"audio": "results/{sample}/audio.json", "transcript": FINAL_TRANSCRIPT}
    inputs.update({f"benchmark_{stage}": f"benchmarks/{stage}/{{sample}}.tsv" for stage in STAGES})
    if "refine" in STAGES:
        inputs["refined"] = "results/{sample}/transcript.refined.json"
    if "diarize" in STAGES:
        inputs["diarization"] = "results/{sample}/diarization.json"
    inputs["merged"] = "results/{sample}/merged.json"
    return inputs


def summary_inputs(wildcards):
    return {
        "metrics": expand("results/{sample}/metrics.json", sample=SAMPLES),
        "evaluations": expand("results/{sample}/evaluation.json", sample=EVALUATED),
    }


#: Speaker-attributed results of every recording (rules merge, export, enhance).
ATTRIBUTED_OUTPUTS = [
    "results/{sample}/merged.json",
    "results/{sample}/transcript.srt",
    "results/{sample}/transcript.vtt",
    "results/{sample}/transcript.txt",
    "results/{sample}/transcript.md",
    "results/{sample}/enhanced.json",
    "results/{sample}/enhanced.md",
]


#: Outputs of rule correct, written only for recordings with a results/<id>/corrections.json.
CORRECTED_OUTPUTS = [
    "results/{sample}/merged.corrected.json",
    "results/{sample}/transcript.corrected.srt",
    "results/{sample}/transcript.corrected.vtt",
    "results/{sample}/transcript.corrected.txt",
    "results/{sample}/transcript.corrected.md",
]


def corrections_path(sample_id):
    """Where a recording's corrections are put (saved from its review page): the sample sheet's
    corrections column, else results/<id>/corrections.json."""
    sample = SAMPLES.get(sample_id)
    return (sample.options.get("corrections") if sample else None) or f"results/{sample_id}/corrections.json"


for _sample_id, _sample in SAMPLES.items():
    if _sample.options.get("corrections") and not os.path.exists(_sample.options["corrections"]):
        print(f"trax: warning: {_sample.options['corrections']}: not found: {_sample_id} is not corrected "
              "(sample sheet column corrections)", file=sys.stderr)


def corrected_samples():
    """Recordings whose corrections.json exists: only these get rule correct's outputs."""
    return [sample_id for sample_id in SAMPLES if os.path.exists(corrections_path(sample_id))]


def corrections_file(wildcards):
    """Rule correct's input; asking for a corrected output without corrections is a clear error."""
    path = corrections_path(wildcards.sample)
    if not os.path.exists(path):
        raise WorkflowError(f"trax: error: {path}: not found: save it from results/{wildcards.sample}/review.html first")
    return path


def review_inputs(wildcards):
    """merged.json and the audio copy; with corrections also them and merged.corrected.json, so
    putting a corrections.json next to the page reruns just correct and review."""
    inputs = {"merged": "results/{sample}/merged.json", "audio": "results/{sample}/review.webm"}
    if os.path.exists(corrections_path(wildcards.sample)):
        inputs.update(corrections=corrections_path(wildcards.sample), corrected="results/{sample}/merged.corrected.json")
    return inputs


def per_file_outputs():
    """Every per-recording result (metrics and figures need all the stages, so this is the lot)."""
    outputs = ["results/{sample}/metrics.json", "results/{sample}/report/timeline.svg",
               "results/{sample}/report/confidence.svg", "results/{sample}/report/preview.html",
               "results/{sample}/review.html", "results/{sample}/review.webm"]
    return expand(outputs + ATTRIBUTED_OUTPUTS, sample=SAMPLES) + expand(CORRECTED_OUTPUTS, sample=corrected_samples())


def adapter_dataset(wildcards):
    """train_adapter's dataset TSV: adapters.datasets[domain] (relative to the working directory)."""
    try:
        return config["adapters"]["datasets"][wildcards.domain]
    except KeyError:
        raise WorkflowError(
            f"trax: error: no dataset for domain '{wildcards.domain}': name one in adapters.datasets "
            f"(known: {', '.join(config['adapters']['datasets']) or '(none)'})"
        )


def adapter_audio(wildcards):
    """The audio files the dataset names, so editing or replacing one retrains the adapter. Missing
    ones are left to the job, which reports the first with its row in one line."""
    return dataset_audio_files(adapter_dataset(wildcards))


def adapter_settings(wildcards):
    """Training settings: the adapters section without the datasets map (a change to another
    domain's dataset must not retrain this one; this domain's TSV is an input). A null model is
    the refine model: an adapter must be trained on the model that decodes with it."""
    settings = {key: value for key, value in config["adapters"].items() if key != "datasets"}
    settings["model"] = settings["model"] or config["refine"]["model"]
    return settings


def adapted_model_settings(wildcards):
    """What the merged model depends on besides the adapter files: the base model and weight type."""
    settings = adapter_settings(wildcards)
    return {key: settings[key] for key in ("model", "compute_type")}


def refine_adapters(wildcards):
    """Adapted model directories refine may load for this file: its sample-sheet domain's, or with
    a fixed refine.domain that one's, else (auto-detection) every domain's. Inputs, so Snakemake
    builds them first (resources/adapters/<domain>/ct2) and a rebuilt adapter reruns refine."""
    if not config["refine"]["enabled"]:
        return []
    domain = sample_domain(wildcards) or config["refine"]["domain"]
    names = list(DOMAINS) if domain == "auto" else [domain]
    adapters = [DOMAINS[name]["adapter"] for name in names if name in DOMAINS]
    return sorted({adapter for adapter in adapters if adapter and is_model_path(adapter)})


def all_outputs(wildcards):
    outputs = per_file_outputs() + expand("results/{sample}/evaluation.json", sample=EVALUATED)
    if DIARIZED:
        outputs += expand(["results/{sample}/diarization.rttm", "results/{sample}/diarization.json"], sample=SAMPLES)
        if SAMPLES:
            outputs.append("results/speakers.tsv")
    if SAMPLES:
        outputs += ["results/summary.tsv", "results/report/summary.html"]
    # Adapters are opt-in: only domains that name a dataset in adapters.datasets get one.
    return outputs + expand("resources/adapters/{domain}/ct2", domain=config["adapters"]["datasets"])
