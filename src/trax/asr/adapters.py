"""Domain adapters: LoRA fine-tuning of the Whisper refine model on a domain's own transcripts.

A domain dataset is a TSV with columns ``audio`` (path, relative to the TSV's folder) and ``text``
(the corrected transcript), optional ``start``/``end`` (seconds, to cut a clip out of a longer
recording) and optional ``split`` (``train`` / ``validation``). :func:`train_adapter` rebuilds the
CTranslate2 model as a transformers Whisper (:mod:`trax.asr.ct2_hf`), trains a peft LoRA adapter on it
deterministically and writes the adapter files plus ``metrics.json`` (per-step training loss,
held-out validation WER before and after). :func:`build_adapted_model` merges the adapter into the
base weights and converts the result back to a CTranslate2 directory that faster-whisper loads.

Training runs in the job's own process, not in the model server: it is a rare, minutes-long,
CPU-saturating job, and the server's workers are sized for decoding.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trax.errors import TraxError
from trax.io.jsonio import staging_dir, write_json_atomic
from trax.asr.models import ModelSource, resolve_whisper
from trax.io.provenance import provenance, sha256_file

log = logging.getLogger(__name__)

#: Whisper sees 30 s windows; a longer clip would be cut and its transcript would not match.
MAX_CLIP_S = 30.0
#: Shorter than this holds no word (same floor as normalize.min_duration_s).
MIN_CLIP_S = 0.1
#: Decoder positions available to prompt + text + end-of-text.
MAX_TARGET_TOKENS = 448
SPLITS = ("train", "validation")
#: Domain names (wildcard and config keys): also folder names under resources/adapters/.
DOMAIN_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
LOSS_DIGITS = 4
WER_DIGITS = 4
ADAPTER_INFO = "trax-adapter.json"


@dataclass(frozen=True)
class AdapterOptions:
    """Training settings (the ``adapters`` config section, less ``datasets``).

    Attributes:
        model: The CTranslate2 model the adapter is trained on (spec as in :mod:`trax.asr.models`);
            it must be the model that later decodes with it.
        language: Language token for multilingual models (ignored by English-only ones).
        r: LoRA rank. 8 on q/v projections is the usual small-data choice (~0.3 % of base's weights).
        alpha: LoRA scaling numerator (update scale = alpha / r).
        dropout: Dropout on the LoRA branch (seeded, so still deterministic).
        target_modules: Module names that get adapters (q_proj/v_proj in every attention block).
        train_encoder: Put adapters in the encoder's attention too. False adapts the decoder only
            (self- and cross-attention): the frozen encoder's output is then computed once per
            clip instead of forward and backward at every step, several times faster.
        learning_rate: AdamW learning rate, constant.
        epochs: Passes over the training clips.
        max_steps: Stop after this many optimizer steps (None: run all epochs).
        batch_size: Clips per optimizer step; each clip costs one 30 s encoder window.
        seed: Seeds torch, numpy, Python and the clip order.
        threads: torch intra-op threads. Fixed from config, never from ``--cores``, because the
            thread count changes float summation order and so the trained weights' last bits.
        validation_fraction: Share of rows held out for validation WER when the TSV has no
            ``split`` column (the last rows, at least one). 0 disables validation.
        compute_type: CTranslate2 weight type of the merged model (int8: fast on CPU, small).
    """

    model: str = "embedded:base"
    language: str = "en"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_encoder: bool = True
    learning_rate: float = 1e-3
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 4
    seed: int = 0
    threads: int = 2
    validation_fraction: float = 0.25
    compute_type: str = "int8"

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> AdapterOptions:
        values = {k: v for k, v in settings.items() if k != "datasets"}
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    def serialize(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


# --- dataset ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """One dataset row: a (part of an) audio file and its transcript."""

    row: int
    audio: Path
    text: str
    start: float | None
    end: float | None
    split: str | None


def _seconds(dataset: Path, row: int, column: str, value: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise TraxError(dataset, f"row {row}: {column} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise TraxError(dataset, f"row {row}: {column} {value!r} must be >= 0")
    return seconds


def read_dataset(dataset: str | os.PathLike[str]) -> list[Clip]:
    """Read and check a dataset TSV (see the module docstring); row numbers count the header as 1.

    Raises:
        TraxError: Naming the TSV and the first problem: missing file, no rows, a missing
            ``audio``/``text`` column, an empty text, a missing audio file, bad start/end or split.
    """
    dataset = Path(dataset)
    if not dataset.is_file():
        raise TraxError(dataset, "dataset not found")
    with open(dataset, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("audio", "text") if c not in columns]
        if missing:
            raise TraxError(dataset, f"missing column {' and '.join(repr(c) for c in missing)} "
                                     f"(a tab-separated file with columns audio, text[, start, end, split]; "
                                     f"found {columns or 'no header'})")
        rows = [{(k or "").strip(): (v or "") for k, v in raw.items()} for raw in reader]
    if not rows:
        raise TraxError(dataset, "dataset has no rows")
    clips = []
    for index, row in enumerate(rows, start=2):
        text = " ".join(row["text"].split())
        if not text:
            raise TraxError(dataset, f"row {index}: empty text")
        if not row["audio"].strip():
            raise TraxError(dataset, f"row {index}: empty audio path")
        audio = (dataset.parent / row["audio"].strip()).resolve()
        if not audio.is_file():
            raise TraxError(dataset, f"row {index}: audio file not found: {row['audio'].strip()}")
        start = _seconds(dataset, index, "start", row.get("start", ""))
        end = _seconds(dataset, index, "end", row.get("end", ""))
        if start is not None and end is not None and end <= start:
            raise TraxError(dataset, f"row {index}: end {end:g} s is not after start {start:g} s")
        split = row.get("split", "").strip() or None
        if split is not None and split not in SPLITS:
            raise TraxError(dataset, f"row {index}: split {split!r} must be one of {', '.join(SPLITS)}")
        clips.append(Clip(row=index, audio=audio, text=text, start=start, end=end, split=split))
    return clips


def dataset_audio_files(dataset: str | os.PathLike[str]) -> list[str]:
    """Existing audio files a dataset TSV names (for Snakemake's inputs); [] when the TSV is
    missing or malformed — the job then reports the problem in one line."""
    try:
        with open(dataset, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    base = Path(dataset).parent
    files = {str(base / row["audio"].strip()) for row in rows if (row.get("audio") or "").strip()}
    return sorted(f for f in files if os.path.isfile(f))


def split_dataset(dataset: Path, clips: list[Clip], validation_fraction: float) -> tuple[list[Clip], list[Clip]]:
    """(train, validation): the ``split`` column when given, else the last rows are held out."""
    if any(c.split for c in clips):
        train = [c for c in clips if c.split != "validation"]
        validation = [c for c in clips if c.split == "validation"]
    elif validation_fraction > 0:
        if len(clips) < 2:
            raise TraxError(dataset, "needs at least 2 rows: one to train on and one held out for validation "
                                     "(or set adapters.validation_fraction: 0)")
        held_out = min(len(clips) - 1, max(1, round(len(clips) * validation_fraction)))
        train, validation = clips[:-held_out], clips[-held_out:]
    else:
        train, validation = clips, []
    if not train:
        raise TraxError(dataset, "no training rows (every row has split=validation)")
    return train, validation


def load_clip(dataset: Path, clip: Clip) -> np.ndarray:
    """Decode a clip to 16 kHz mono float32 with Trax's ffmpeg (the resampler normalize uses, so
    training sees what refinement will see) and cut ``start``/``end``.

    Raises:
        TraxError: When the audio does not decode, or the clip is shorter than 0.1 s or longer
            than 30 s (one Whisper window).
    """
    from trax.io.media import SAMPLE_RATE, decode_clip

    audio = decode_clip(clip.audio, clip.start, clip.end, dataset, f"row {clip.row}")
    duration = len(audio) / SAMPLE_RATE
    if duration > MAX_CLIP_S:
        raise TraxError(dataset, f"row {clip.row}: clip {clip.audio.name} is {duration:.1f} s, longer than one "
                                 f"{MAX_CLIP_S:g} s Whisper window (cut it with start/end)")
    if duration < MIN_CLIP_S:
        raise TraxError(dataset, f"row {clip.row}: clip {clip.audio.name} is {duration:.2f} s, shorter than {MIN_CLIP_S:g} s")
    return audio


# --- model pieces ------------------------------------------------------------------------------

def set_deterministic(seed: int, threads: int) -> None:
    """Seed everything and make torch's math repeatable: fixed intra-op threads, deterministic
    algorithms, one BLAS thread for numpy (features)."""
    import torch

    from trax.process import pin_blas_threads

    pin_blas_threads()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def whisper_tokenizer(source: ModelSource, multilingual: bool, language: str):  # -> faster_whisper Tokenizer
    """faster-whisper's tokenizer for the model directory (the one decoding uses)."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    hf_tokenizer = tokenizers.Tokenizer.from_file(str(Path(source.path) / "tokenizer.json"))
    return Tokenizer(hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else "en")


def decoder_prompt(tokenizer: Any) -> list[int]:
    """Start-of-transcript (+ language + task) + no-timestamps: how refinement decodes a span."""
    return list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]


@dataclass
class Example:
    """One training or validation clip, ready for the model."""

    clip: Clip
    audio: np.ndarray
    features: np.ndarray
    tokens: list[int]  # prompt + text + end-of-text
    encoded: Any = None  # encoder output, cached when the encoder is frozen


def make_examples(dataset: Path, clips: list[Clip], tokenizer: Any, n_mels: int) -> list[Example]:
    from trax.asr.ct2_hf import log_mel

    prompt = decoder_prompt(tokenizer)
    examples = []
    for clip in clips:
        audio = load_clip(dataset, clip)
        tokens = prompt + tokenizer.encode(" " + clip.text) + [tokenizer.eot]
        if len(tokens) > MAX_TARGET_TOKENS:
            raise TraxError(dataset, f"row {clip.row}: text is {len(tokens)} tokens, more than Whisper's "
                                     f"{MAX_TARGET_TOKENS}-token window")
        examples.append(Example(clip=clip, audio=audio, features=log_mel(audio, n_mels), tokens=tokens))
    return examples


def batch_tensors(examples: list[Example], prompt_length: int):  # -> (features, decoder inputs, labels)
    """Stack a batch; labels are the next tokens, with the prompt and right-padding ignored (-100)."""
    import torch

    width = max(len(e.tokens) for e in examples) - 1
    inputs = torch.full((len(examples), width), examples[0].tokens[-1], dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        tokens = torch.tensor(example.tokens)
        inputs[row, : len(tokens) - 1] = tokens[:-1]
        labels[row, : len(tokens) - 1] = tokens[1:]
        labels[row, : prompt_length - 1] = -100  # the model is not taught to predict its prompt
    features = torch.from_numpy(np.stack([e.features for e in examples]))
    return features, inputs, labels


def validation_wer(model_dir: Path, examples: list[Example], options: AdapterOptions) -> dict[str, Any] | None:
    """Decode the held-out clips with faster-whisper (greedy, no timestamps) from a CTranslate2
    directory (what refinement will load) and score them with Whisper's English normalizer."""
    from faster_whisper import WhisperModel

    from trax.quality.evaluation import corpus_wer

    if not examples:
        return None
    model = WhisperModel(str(model_dir), device="cpu", compute_type=options.compute_type, cpu_threads=options.threads)
    hypotheses = []
    for example in examples:
        segments, _ = model.transcribe(example.audio, language=options.language, beam_size=1, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False)
        hypotheses.append(" ".join(segment.text.strip() for segment in segments).strip())
    result = corpus_wer([e.clip.text for e in examples], hypotheses)
    return {
        "wer": round(result.wer, WER_DIGITS),
        "substitutions": result.substitutions,
        "deletions": result.deletions,
        "insertions": result.insertions,
        "reference_words": result.reference_words,
        "hypotheses": hypotheses,
    }


# --- training ----------------------------------------------------------------------------------

@dataclass
class TrainingResult:
    """What :func:`train_adapter` measured (also the body of ``metrics.json``)."""

    steps: int
    epochs: int
    losses: list[float] = field(default_factory=list)
    validation_before: dict[str, Any] | None = None
    validation_after: dict[str, Any] | None = None
    seconds: float = 0.0  # wall clock, logged only (never written: reruns stay byte-identical)


def _log_step(step: int, total: int, epoch: int, loss: float, started: float) -> None:
    elapsed = time.monotonic() - started
    log.info("step %d/%d (epoch %d) loss %.4f — %.0f%%, %.1f s elapsed, ~%.0f s left",
             step, total, epoch, loss, 100.0 * step / total, elapsed, elapsed / step * (total - step))


def train(
    dataset: Path,
    options: AdapterOptions,
    output_dir: Path,
    progress: Callable[[int, int, int, float, float], None] = _log_step,
) -> tuple[TrainingResult, ModelSource, list[Clip], list[Clip]]:
    """Train a LoRA adapter and save it (peft format) into ``output_dir``."""
    import torch

    from trax.asr.ct2_hf import convert_to_ct2, import_transformers, load_hf_whisper

    import_transformers()  # before peft, which imports transformers too
    from peft import LoraConfig, get_peft_model

    set_deterministic(options.seed, options.threads)
    clips = read_dataset(dataset)
    train_clips, validation_clips = split_dataset(dataset, clips, options.validation_fraction)
    source = resolve_whisper(options.model)
    if source.path is None:
        raise TraxError(options.model, "adapters need a local CTranslate2 model (embedded or a directory)")
    base = load_hf_whisper(source.path)
    tokenizer = whisper_tokenizer(source, base.config.vocab_size >= 51865, options.language)
    prompt_length = len(decoder_prompt(tokenizer))
    train_set = make_examples(dataset, train_clips, tokenizer, base.config.num_mel_bins)
    validation_set = make_examples(dataset, validation_clips, tokenizer, base.config.num_mel_bins)
    log.info("dataset %s: %d training and %d validation clips", dataset, len(train_set), len(validation_set))

    result = TrainingResult(steps=0, epochs=options.epochs)
    result.validation_before = validation_wer(source.path, validation_set, options)
    if result.validation_before:
        log.info("validation WER before: %.4f", result.validation_before["wer"])

    targets = list(options.target_modules)
    if not options.train_encoder:
        # peft matches a string target as a full-name regex: decoder attention blocks only.
        targets = rf"model\.decoder\.layers\.\d+\.(self_attn|encoder_attn)\.({'|'.join(options.target_modules)})"
        with torch.no_grad():  # the frozen encoder's output never changes: compute it once per clip
            for example in train_set:
                example.encoded = base.get_encoder()(torch.from_numpy(example.features)[None]).last_hidden_state[0]
    lora = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=targets, bias="none")
    model = get_peft_model(base, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d alpha=%d on %s (%s): %d trainable parameters", options.r, options.alpha,
             ",".join(options.target_modules), "encoder+decoder" if options.train_encoder else "decoder only", trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.learning_rate)
    per_epoch = math.ceil(len(train_set) / options.batch_size)
    total = per_epoch * options.epochs if options.max_steps is None else min(options.max_steps, per_epoch * options.epochs)
    order_rng = torch.Generator().manual_seed(options.seed)
    started = time.monotonic()
    model.train()
    for epoch in range(1, options.epochs + 1):
        order = torch.randperm(len(train_set), generator=order_rng).tolist()
        for first in range(0, len(order), options.batch_size):
            if result.steps >= total:
                break
            batch = [train_set[i] for i in order[first:first + options.batch_size]]
            features, inputs, labels = batch_tensors(batch, prompt_length)
            if options.train_encoder:
                loss = model(input_features=features, decoder_input_ids=inputs, labels=labels).loss
            else:
                encoded = torch.stack([e.encoded for e in batch])
                loss = model(encoder_outputs=(encoded,), decoder_input_ids=inputs, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            result.steps += 1
            value = loss.item()
            result.losses.append(round(value, LOSS_DIGITS))
            progress(result.steps, total, epoch, value, started)
    result.seconds = time.monotonic() - started
    model.eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    if validation_set:
        with tempfile.TemporaryDirectory() as merged_dir:
            convert_to_ct2(model.merge_and_unload(), source.path, Path(merged_dir) / "ct2", options.compute_type)
            result.validation_after = validation_wer(Path(merged_dir) / "ct2", validation_set, options)
        log.info("validation WER after: %.4f", result.validation_after["wer"])
    return result, source, train_clips, validation_clips


def train_adapter(
    dataset: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    domain: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Train the ``domain`` adapter from ``dataset``; write the adapter directory and metrics JSON.

    The adapter is saved into a temporary folder beside ``adapter_dir`` and moved into place only
    after training succeeded, so a failed job leaves no partial adapter.

    Returns:
        The metrics (``workflow/schemas/adapter_metrics.schema.yaml``).
    """
    import shutil

    dataset = Path(dataset)
    adapter_dir = Path(adapter_dir)
    options = AdapterOptions.from_config(settings)
    staging = staging_dir(adapter_dir)
    try:
        result, source, train_clips, validation_clips = train(dataset, options, staging)
        clips = sorted(train_clips + validation_clips, key=lambda c: c.row)
        metrics = {
            "domain": domain,
            "dataset": {
                "path": str(dataset),
                "rows": len(clips),
                "train_rows": [c.row for c in train_clips],
                "validation_rows": [c.row for c in validation_clips],
            },
            "training": {
                "steps": result.steps,
                "epochs": result.epochs,
                "loss": result.losses,
                "final_loss": result.losses[-1] if result.losses else None,
            },
            "validation": {"before": result.validation_before, "after": result.validation_after},
            "adapter_files": sorted(p.name for p in staging.iterdir()),
            "provenance": provenance(
                config=options.serialize(),
                input_sha256=sha256_file(dataset),
                models={"base": source.describe()},
                audio_sha256={str(c.row): sha256_file(c.audio) for c in clips},
            ),
        }
        log.info("trained %d steps in %.1f s", result.steps, result.seconds)
        write_json_atomic(staging / ADAPTER_INFO, {k: metrics[k] for k in ("domain", "provenance")})
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        staging.rename(adapter_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(metrics_path, metrics, schema="adapter_metrics")
    return metrics


def build_adapted_model(
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: dict[str, Any],
) -> Path:
    """Merge a LoRA adapter into its base model and write a CTranslate2 model directory.

    Raises:
        TraxError: When the adapter was trained on another base model than ``settings['model']``.
    """
    from trax.asr.ct2_hf import convert_to_ct2, import_transformers, load_hf_whisper
    from trax.io.jsonio import read_json

    import_transformers()  # before peft, which imports transformers too
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    options = AdapterOptions.from_config(settings)
    set_deterministic(options.seed, options.threads)
    source = resolve_whisper(options.model)
    info = read_json(adapter_dir / ADAPTER_INFO)
    trained_on = info["provenance"]["models"]["base"]
    if trained_on["weights_sha256"] != source.weights_sha256:
        raise TraxError(adapter_dir, f"adapter was trained on {trained_on['spec']} ({trained_on['id']}), "
                                     f"not on {options.model}")
    base = load_hf_whisper(source.path)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    output_dir = convert_to_ct2(merged, source.path, output_dir, quantization=options.compute_type)
    write_json_atomic(output_dir / ADAPTER_INFO, {
        **info,
        "base": source.describe(),
        "adapter_sha256": {p.name: sha256_file(p) for p in sorted(adapter_dir.iterdir()) if p.is_file()},
        "compute_type": options.compute_type,
    })
    return output_dir
