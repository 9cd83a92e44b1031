"""Refinement: re-decode the fast transcript's low-confidence spans with a second model.

Steps (:func:`refine_transcript`):

1. Choose the domain (:mod:`trax.asr.domains`): pinned by the sample sheet or config, or detected from
   the fast text. Its prompt and hotwords bias the re-decode.
2. Plan spans (:func:`plan_spans`): words whose probability is below ``word_threshold`` are
   low-confidence; runs of them closer than ``merge_gap_s`` merge into one span; each span is
   padded by ``context_s`` of audio on both sides (the decoder needs context to hear a word).
   Word probability is the only per-word signal: faster-whisper's ``avg_logprob`` is computed per
   30 s window, so every segment of a window shares it and it cannot rank segments.
3. Re-decode all spans of a file in one call with ``clip_timestamps`` (one model call per file).
4. Splice (:func:`splice`): align each clip's new words to the fast words of the same stretch; the
   context words that both passes agree on anchor the replacement, so context is never doubled or
   dropped. The new words are accepted only when their mean probability beats the fast words they
   replace by more than ``min_gain``; either way the output records both texts and confidences.

Refinement off (``enabled: false``) writes the fast content unchanged (the domain is still chosen
and recorded, for enhancement) and says so in the provenance.

``mode: combine`` (the default) replaces steps 2-4: the second model decodes the recording's speech
as whole VAD chunks (:mod:`trax.asr.second_opinion`; every chunk, or only chunks holding a doubtful
fast word), and the two word sequences are combined word by word (:mod:`trax.asr.combine`): where
they disagree, the side with the higher calibrated confidence wins (or a domain term, as above).
Every disagreement is listed in ``refinement.changes`` with both candidates, their confidences and
why one won. A recording that is not English is left as the fast pass wrote it (the fast pass
already decoded it with the multilingual model; the second opinion is the same model).
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trax import progress
from trax.asr import domains as domain_lib
from trax.asr.combine import CALIBRATIONS, Calibration, decide, disagreements, token
from trax.asr.models import ModelSource, resolve_whisper
from trax.asr.second_opinion import Chunk, decode_chunks
from trax.asr.transcribe import (
    PROB_DIGITS,
    TIME_DIGITS,
    TranscribeOptions,
    load_wav,
    load_whisper,
)
from trax.errors import TraxError
from trax.io.jsonio import (
    iter_json_list,
    read_json,
    read_json_head,
    write_json_atomic,
    write_json_streamed,
)
from trax.io.languages import word_separator
from trax.io.provenance import provenance, sha256_file
from trax.process import pin_blas_threads

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineOptions:
    """The ``refine`` config section.

    Attributes:
        enabled: Refine (see ``mode``). False: the refined transcript is the fast one. Off by
            default: combine mode met the accuracy target (dev 20 -> 17 errors) and the 1.8x time
            ratio (1.71x), not yet the 25 s bound for the 5-minute file on the shared machine.
        model: Refine model spec (see :mod:`trax.asr.models`); ``embedded:base`` = multilingual Whisper
            base from PyPI.
        device: ``cpu``, ``cuda`` or ``auto``.
        compute_type: CTranslate2 compute type.
        cpu_threads: Threads for the re-decode (fixed from config, like the fast pass).
        beam_size: Beam width of the re-decode.
        word_threshold: A word whose probability is below this is low-confidence and gets
            re-decoded. Chosen from ``bench/refine.py`` (see config/README.md).
        merge_gap_s: Low-confidence words closer than this merge into one span (one clip).
        context_s: Audio added on each side of a span for the re-decode.
        min_gain: The new text replaces the old only when its mean word probability exceeds the old
            one's by more than this (or by the domain-term rule, see ``term_similarity``).
        term_similarity: Also accept a re-decode that brings in a domain term (a word of the
            domain's hotwords or glossary) which the fast text lacks, when the fast word it
            replaces is spelled alike (difflib ratio at least this: 'Burkett'/'Birket' 0.77,
            'itles'/'idylls' 0.55). Rare names get low probabilities even when right, so the
            confidence rule alone rejects exactly the fixes biasing is for. Above 1 disables it.
        domain: ``auto`` (detect from the fast text) or a domain name.
        domains_dir: Folder of domain files; null = the workflow's ``config/domains``. (The rule
            reads the files; this key only makes a change of folder rerun refinement.)
        domain_min_hits: Keyword hits the best domain needs for ``auto`` to pick it over ``general``.
        bias: Give the chosen domain's prompt and hotwords to the re-decode.
        mode: ``combine`` (a second decode of whole speech chunks, combined word by word) or
            ``spans`` (re-decode padded low-confidence spans and splice them in).
        chunks: Combine mode: ``all`` speech chunks are decoded a second time, or only those
            holding a ``doubtful`` fast word (probability below ``word_threshold``).
        margin: Combine mode: the second decode's words win a disagreement only when their
            calibrated confidence exceeds the fast words' by more than this.
        batch_size: Combine mode: speech chunks decoded at once (faster-whisper's batched
            pipeline); 0 decodes them one after another with the sequential decoder. 4 as the fast
            pass: on the 5-minute bench file the second decode took 37 s instead of 67 s.
        calibration: Combine mode: ``none`` compares Whisper's word probabilities as they are;
            ``agreement`` first maps each embedded model's through its Platt fit
            (:data:`trax.asr.combine.CALIBRATIONS`).
    """

    enabled: bool = False
    mode: str = "combine"
    chunks: str = "all"
    margin: float = 0.0
    batch_size: int = 4
    calibration: str = "none"
    model: str = "embedded:base"
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 5
    word_threshold: float = 0.5
    merge_gap_s: float = 1.0
    context_s: float = 1.0
    min_gain: float = 0.1
    term_similarity: float = 0.5
    domain: str = "auto"
    domains_dir: str | None = None
    domain_min_hits: int = 2
    bias: bool = True

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> RefineOptions:
        return cls(**settings)

    def decode_settings(self, adapter: str | None = None) -> dict[str, Any]:
        """The :class:`~trax.asr.transcribe.TranscribeOptions` fields that load the refine model.

        Args:
            adapter: The chosen domain's adapted model (a CTranslate2 directory, e.g. built by
                ``build_adapted_model``, or a hub name); it replaces ``model`` for that domain's files.

        Raises:
            TraxError: When the adapted model directory does not exist.
        """
        model = self.model
        if adapter is not None:
            if is_model_path(adapter) and not (Path(adapter) / "model.bin").is_file():
                raise TraxError(adapter, "domain adapter model not found (no model.bin); build it with "
                                         "`snakemake resources/adapters/<domain>/ct2` or fix the domain's adapter")
            model = adapter
        return {"model": model, "device": self.device, "compute_type": self.compute_type,
                "cpu_threads": self.cpu_threads, "beam_size": self.beam_size}


def is_model_path(spec: str) -> bool:
    """Whether a domain's ``adapter`` names a local directory (else a hub model name)."""
    return "/" in spec or spec.startswith((".", "~")) or Path(spec).exists()


@dataclass
class Span:
    """A stretch of low-confidence words re-decoded as one clip.

    Attributes:
        first: Index (in the flat word list) of the first low-confidence word.
        last: Index of the last one.
        clip_start: Start of the decoded clip (span start minus context, not before the previous
            clip's end).
        clip_end: End of the decoded clip.
        low_words: The low-confidence words and their probabilities (why the span was chosen).
    """

    first: int
    last: int
    clip_start: float
    clip_end: float
    low_words: list[tuple[str, float]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        listed = ", ".join(f"'{w}' {p:.2f}" for w, p in self.low_words)
        return f"word probability below threshold: {listed}"


def _flat_words(segments: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(index, word) for index, segment in enumerate(segments) for word in segment["words"]]


def plan_spans(segments: list[dict[str, Any]], duration: float, options: RefineOptions) -> list[Span]:
    """Group low-confidence words into padded, non-overlapping clips (see the module docstring)."""
    words = _flat_words(segments)
    spans: list[Span] = []
    for position, (_, word) in enumerate(words):
        if word["probability"] >= options.word_threshold:
            continue
        low = (word["word"], word["probability"])
        if spans and word["start"] - words[spans[-1].last][1]["end"] <= options.merge_gap_s:
            spans[-1].last = position
            spans[-1].low_words.append(low)
        else:
            spans.append(Span(position, position, 0.0, 0.0, [low]))
    previous_end = 0.0
    for span in spans:
        start, end = words[span.first][1]["start"], words[span.last][1]["end"]
        span.clip_start = round(max(previous_end, start - options.context_s, 0.0), TIME_DIGITS)
        span.clip_end = round(min(duration, max(end + options.context_s, span.clip_start + 0.1)), TIME_DIGITS)
        previous_end = span.clip_end
    return spans


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), PROB_DIGITS) if values else None


@dataclass
class Replacement:
    """The outcome of one span: fast words [start, stop) and the words the re-decode proposes."""

    start: int
    stop: int
    new_words: list[dict[str, Any]]
    confidence_before: float | None
    confidence_after: float | None
    accepted: bool
    decision: str


def _term_fix(old: list[str], new: list[str], vocabulary: set[str], similarity: float) -> str | None:
    """Describe the best domain term in ``new`` that ``old`` lacks and that replaces an alike-spelled
    old word, or None."""
    best: tuple[float, str, str] | None = None
    for term in {t for t in new if t in vocabulary} - set(old):
        for word in old:
            ratio = difflib.SequenceMatcher(None, word, term).ratio()
            if ratio >= similarity and (best is None or ratio > best[0]):
                best = (ratio, term, word)
    return None if best is None else f"domain term '{best[1]}' replaces alike-spelled '{best[2]}' ({best[0]:.2f})"


def vocabulary_of(domain: dict[str, Any]) -> set[str]:
    """Normalized single words of a domain's hotwords and glossary terms (3+ characters)."""
    terms = [*domain["hotwords"], *domain["glossary"]]
    return {t for term in terms for t in map(token, term.split()) if len(t) >= 3}


def splice(
    words: list[tuple[int, dict[str, Any]]], span: Span, decoded: list[dict[str, Any]], min_gain: float,
    vocabulary: set[str] = frozenset(), term_similarity: float = 2.0,
) -> Replacement:
    """Decide which fast words the clip's new words replace, and whether to accept them.

    The fast words inside the clip and the decoded words are aligned (difflib on normalized
    tokens). The last agreeing pair before the span and the first after it are the anchors: the
    replaced stretch lies strictly between them, so context that both passes heard alike is kept
    once. Without an anchor on a side, the span's own edge and word times decide that side.
    """
    inside = [i for i, (_, w) in enumerate(words)
              if span.clip_start <= (w["start"] + w["end"]) / 2 <= span.clip_end or span.first <= i <= span.last]
    fast_tokens = [token(words[i][1]["word"]) for i in inside]
    new_tokens = [token(w["word"]) for w in decoded]
    matcher = difflib.SequenceMatcher(None, fast_tokens, new_tokens, autojunk=False)
    pairs = [(inside[a + k], b + k) for a, b, size in matcher.get_matching_blocks() for k in range(size)]
    left = [(f, n) for f, n in pairs if f < span.first and fast_tokens[inside.index(f)]]
    right = [(f, n) for f, n in pairs if f > span.last and fast_tokens[inside.index(f)]]
    if left:
        start, new_start = left[-1][0] + 1, left[-1][1] + 1
    else:
        start = span.first
        edge = words[span.first][1]["start"]
        new_start = next((j for j, w in enumerate(decoded) if (w["start"] + w["end"]) / 2 >= edge), len(decoded))
    if right:
        stop, new_stop = right[0][0], right[0][1]
    else:
        stop = span.last + 1
        edge = words[span.last][1]["end"]
        new_stop = next((j for j, w in enumerate(decoded) if (w["start"] + w["end"]) / 2 > edge), len(decoded))
    new_words = decoded[new_start:max(new_start, new_stop)]
    before = _mean([words[i][1]["probability"] for i in range(start, stop)])
    after = _mean([w["probability"] for w in new_words])
    old_tokens = [token(words[i][1]["word"]) for i in range(start, stop)]
    new_tokens = [token(w["word"]) for w in new_words]
    term = _term_fix(old_tokens, new_tokens, vocabulary, term_similarity)
    if new_tokens == old_tokens:
        accepted, decision = False, "re-decode agrees with the fast text; kept it"
    elif after is None:
        accepted, decision = False, "re-decode produced no words here; kept the fast text"
    elif before is None or after > before + min_gain:
        accepted, decision = True, f"accepted: re-decode more confident ({after:.4f} > {before or 0:.4f} + {min_gain:g})"
    elif term is not None:
        accepted, decision = True, f"accepted: {term}"
    else:
        accepted, decision = False, f"kept the fast text: re-decode not more confident ({after:.4f} <= {before:.4f} + {min_gain:g})"
    return Replacement(start, stop, new_words, before, after, accepted, decision)


def _decoded_words(model: Any, audio: np.ndarray, spans: list[Span], language: str,
                   options: RefineOptions, hotwords: str | None) -> list[list[dict[str, Any]]]:
    """Re-decode every span in one call; return the words of each clip (absolute times)."""
    clips = [t for span in spans for t in (span.clip_start, span.clip_end)]
    total = sum(span.clip_end - span.clip_start for span in spans)
    segments, _ = model.transcribe(
        audio, language=language, beam_size=options.beam_size, temperature=0.0, word_timestamps=True,
        vad_filter=False, condition_on_previous_text=False, clip_timestamps=clips, hotwords=hotwords,
    )
    per_clip: list[list[dict[str, Any]]] = [[] for _ in spans]
    for segment in segments:
        for raw in segment.words or []:
            middle = (raw.start + raw.end) / 2
            index = next((i for i, s in enumerate(spans) if middle <= s.clip_end), len(spans) - 1)
            per_clip[index].append({"start": round(raw.start, TIME_DIGITS), "end": round(raw.end, TIME_DIGITS),
                                    "word": raw.word.strip(), "probability": round(float(raw.probability), PROB_DIGITS)})
        done = sum(max(0.0, min(segment.end, s.clip_end) - s.clip_start) for s in spans)
        progress.report("refine", min(done, total), total)
    progress.report("refine", total, total)
    return per_clip


def refine_transcript(
    fast: dict[str, Any],
    wav_path: str,
    settings: dict[str, Any],
    domains: dict[str, dict[str, Any]],
    sample_domain: str | None,
    model_provider: Callable[[str | None], tuple[Any, ModelSource]] | None,
) -> dict[str, Any]:
    """Build the refined transcript (serialized, ``transcript.refined`` schema) from the fast one.

    The one function the model server and the in-process path both run, so their bytes agree.

    Args:
        fast: The fast transcript (``transcript.fast.json``).
        wav_path: The normalized audio.
        settings: The ``refine`` config section.
        domains: Domain definitions by name (:func:`trax.asr.domains.load_domains`).
        sample_domain: The sample sheet's ``domain`` for this file, if any (wins over config).
        model_provider: Returns the loaded refine model and its source for the chosen domain's
            adapter (None: the plain refine model); called only when there is something to re-decode. None when the caller knows nothing will be (refinement off).
    """
    options = RefineOptions.from_config(settings)
    choice, domain, hotwords = _domain_of(fast["text"], domains, sample_domain, options)
    segments = [dict(segment, words=[dict(w) for w in segment["words"]]) for segment in fast["segments"]]
    records = [_unchosen(segment) for segment in segments]
    # Not English: the multilingual model already decoded it, so a second opinion from the refine
    # model (the same one by default) has nothing to add; the status says so.
    english = fast["language"] == "en"
    combining = options.enabled and english and options.mode == "combine" and combine_skip_reason(fast, options) is None
    spans = plan_spans(segments, fast["duration"], options) if options.enabled and english and options.mode == "spans" else []
    models = dict(fast["provenance"]["models"])
    span_records: list[dict[str, Any]] = []
    combined: dict[str, Any] | None = None
    vocabulary = vocabulary_of(domain) if options.bias else set()
    if spans or combining:
        if model_provider is None:
            raise ValueError("refinement has audio to re-decode but no model")
        model, model_source = model_provider(domain["adapter"])
        models["refine"] = model_source.describe()
        pin_blas_threads()
    if spans:
        decoded = _decoded_words(model, load_wav(wav_path), spans, fast["language"], options, hotwords)
        span_records = _apply(segments, records, spans, decoded, options, vocabulary)
    if combining:
        combined = _combine(segments, records, model, model_source, fast, wav_path, options, hotwords, vocabulary)
    for segment, record in zip(segments, records, strict=True):
        segment["refinement"] = record
    refined = _refined_head(fast, choice, domain, hotwords, spans, span_records, models, settings, wav_path,
                            _fast_hash(fast), sample_domain, combined)
    refined["segments"] = segments
    refined["text"] = word_separator(fast["language"]).join(s["text"] for s in segments if s["text"])
    return refined


def copy_fast_transcript(fast_path: str, wav_path: str, output_path: str, settings: dict[str, Any],
                         domains: dict[str, dict[str, Any]], sample_domain: str | None) -> None:
    """Refinement off: write the refined transcript as :func:`refine_transcript` would (same
    bytes), but read and written one segment at a time, so the Snakemake process that runs it does
    not grow with the recording (:mod:`trax.io.jsonio`)."""
    fast = read_json_head(fast_path, {"segments"})
    options = RefineOptions.from_config(settings)
    choice, domain, hotwords = _domain_of(fast["text"], domains, sample_domain, options)
    texts: list[str] = []

    def segments() -> Iterator[dict[str, Any]]:
        for segment in iter_json_list(fast_path, "segments"):
            if segment["text"]:
                texts.append(segment["text"])
            yield {**segment, "refinement": _unchosen(segment)}

    def head() -> dict[str, Any]:
        # A fast transcript is always written by Trax (jsonio.dumps), so its file's sha256 is the
        # sha256 of its serialized content that refine_transcript records.
        refined = _refined_head(fast, choice, domain, hotwords, [], [], dict(fast["provenance"]["models"]), settings,
                                wav_path, sha256_file(fast_path), sample_domain)
        return {**refined, "text": word_separator(fast["language"]).join(texts)}

    write_json_streamed(output_path, "segments", segments(), head, schema="transcript.refined",
                        item_schema="transcript.refined.schema.yaml#/$defs/segment")


def _domain_of(text: str, domains: dict[str, dict[str, Any]], sample_domain: str | None,
               options: RefineOptions) -> tuple[Any, dict[str, Any], str | None]:
    """The chosen domain (sample sheet, else config, else detected from ``text``), its definition,
    and the hotwords that bias decoding (None without ``bias``)."""
    requested, source = (sample_domain, "sample_sheet") if sample_domain else (options.domain, "config")
    choice = domain_lib.choose(text, domains, requested, options.domain_min_hits, source)
    domain = domains[choice.name]
    return choice, domain, domain_lib.Domain(**domain).bias_text if options.bias else None


def _refined_head(fast: dict[str, Any], choice: Any, domain: dict[str, Any], hotwords: str | None, spans: list[Span],
                  span_records: list[dict[str, Any]], models: dict[str, Any], settings: dict[str, Any],
                  wav_path: str, fast_sha256: str, sample_domain: str | None,
                  combined: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything of the refined transcript but its segments and text (``combined``: what
    :func:`_combine` returned, in combine mode)."""
    options = RefineOptions.from_config(settings)
    redecoded = round(sum(s.clip_end - s.clip_start for s in spans), TIME_DIGITS)
    if combined is not None:
        redecoded = combined["decoded_s"]
    if not options.enabled:
        status = "disabled (refine.enabled: false): segments copied from the fast transcript"
    elif fast["language"] != "en":
        status = (f"skipped: language '{fast['language']}' is not English, and the fast transcript was decoded "
                  "by the multilingual model: segments copied from the fast transcript")
    elif options.mode == "combine":
        status = combine_skip_reason(fast, options) or combined["status"]
    elif not spans:
        status = f"no word below {options.word_threshold:g}: segments copied from the fast transcript"
    else:
        status = f"{sum(r['accepted'] for r in span_records)} of {len(spans)} re-decoded spans accepted"
    refined = {key: fast[key] for key in ("sample_id", "language", "language_probability", "duration")}
    if "language_detection" in fast:
        refined["language_detection"] = fast["language_detection"]
    refined["domain"] = {
        **asdict(choice),
        "hotwords": domain["hotwords"],
        "initial_prompt": domain["initial_prompt"],
        "glossary": domain["glossary"],
        "adapter": domain["adapter"],
        "bias_text": hotwords,
    }
    refined["refinement"] = {
        "enabled": options.enabled,
        "status": status,
        "spans": span_records,
        "redecoded_s": redecoded,
        "redecoded_share": round(redecoded / fast["duration"], PROB_DIGITS) if fast["duration"] else 0.0,
        "mode": options.mode,
    }
    if combined is not None:
        refined["refinement"].update({key: combined[key] for key in ("calibration", "chunks", "changes")})
    refined["provenance"] = provenance(
        config=settings,
        input_sha256=sha256_file(wav_path),
        models=models,
        fast_transcript_sha256=fast_sha256,
        refinement=status,
        sample_domain=sample_domain,
    )
    return refined


def _fast_hash(fast: dict[str, Any]) -> str:
    from trax.io.jsonio import sha256_json

    return sha256_json(fast)


def _confidence(words: list[dict[str, Any]]) -> float | None:
    return _mean([w["probability"] for w in words])


def _unchosen(segment: dict[str, Any]) -> dict[str, Any]:
    confidence = _confidence(segment["words"])
    return {"chosen": False, "refined": False, "span": None, "reason": None, "decision": "not chosen",
            "text_before": segment["text"], "confidence_before": confidence,
            "text_after": segment["text"], "confidence_after": confidence}


def _apply(segments: list[dict[str, Any]], records: list[dict[str, Any]], spans: list[Span],
           decoded: list[list[dict[str, Any]]], options: RefineOptions, vocabulary: set[str]) -> list[dict[str, Any]]:
    """Splice accepted spans into ``segments`` (in place), fill the per-segment records, and
    return one record per span."""
    words = _flat_words(segments)
    replacements = [splice(words, span, clip, options.min_gain, vocabulary, options.term_similarity)
                    for span, clip in zip(spans, decoded, strict=True)]
    floor = 0  # spans are ordered; an alignment that reached into the previous one's stretch is cut back
    for rep in replacements:
        rep.start = max(rep.start, floor)
        rep.stop = max(rep.stop, rep.start)
        floor = rep.stop
    proposal = _assemble(segments, words, replacements)
    final = _assemble(segments, words, [r for r in replacements if r.accepted])
    span_records = []
    for number, (span, rep) in enumerate(zip(spans, replacements, strict=True)):
        touched = sorted({words[i][0] for i in range(rep.start, rep.stop)}
                         | {words[span.first][0], words[span.last][0]} | set(_targets(segments, words, rep)))
        span_records.append({
            "clip_start": span.clip_start, "clip_end": span.clip_end, "segments": touched, "reason": span.reason,
            "text_before": join_words(words[i][1]["word"] for i in range(rep.start, rep.stop)),
            "text_after": join_words(w["word"] for w in rep.new_words),
            "confidence_before": rep.confidence_before, "confidence_after": rep.confidence_after,
            "accepted": rep.accepted, "decision": rep.decision,
        })
        for index in touched:
            record = records[index]
            if record["chosen"]:  # a second span in the same segment
                record["reason"] += "; " + span.reason
                record["decision"] += "; " + rep.decision
                record["refined"] = record["refined"] or rep.accepted
            else:
                record.update(chosen=True, span=number, reason=span.reason, decision=rep.decision, refined=rep.accepted)
    _write_back(segments, records, proposal, final)
    return span_records


def _write_back(segments: list[dict[str, Any]], records: list[dict[str, Any]], proposal: list[list[dict[str, Any]]],
                final: list[list[dict[str, Any]]], widen: bool = False) -> None:
    """Set each chosen segment's words and text to ``final`` and its record's proposal to
    ``proposal`` (both from :func:`_assemble`), with times made monotonic inside the segment.

    Args:
        widen: First widen a segment to its new words' times, up to its neighbours' bounds (a
            second decode's word keeps its own times where they do not collide with others').
    """
    bounds = [(segment["start"], segment["end"]) for segment in segments]
    for index, (segment, record) in enumerate(zip(segments, records, strict=True)):
        if not record["chosen"]:
            continue
        if widen and final[index]:
            low = bounds[index - 1][1] if index else 0.0
            high = bounds[index + 1][0] if index + 1 < len(bounds) else max(segment["end"], final[index][-1]["end"])
            segment["start"] = round(max(low, min(segment["start"], final[index][0]["start"])), TIME_DIGITS)
            segment["end"] = round(min(high, max(segment["end"], final[index][-1]["end"])), TIME_DIGITS)
            segment["end"] = max(segment["end"], segment["start"])
            bounds[index] = (segment["start"], segment["end"])
        candidate = _monotonic(proposal[index], segment["start"], segment["end"])
        record["text_after"] = _text(segment, candidate)
        record["confidence_after"] = _confidence(candidate)
        kept = _monotonic(final[index], segment["start"], segment["end"])
        segment["text"] = _text(segment, kept)
        segment["words"] = kept


def combine_skip_reason(fast: dict[str, Any], options: RefineOptions) -> str | None:
    """Why combine mode leaves this transcript as the fast pass wrote it, or None.

    Only English is combined: another language was already decoded by the multilingual model
    (the default refine model), so a second decode by it would be no second opinion.
    """
    if fast["language"] != "en":
        return (f"skipped: language '{fast['language']}' was decoded by the multilingual model in the fast pass; "
                "the combining second opinion is for English only")
    return None


def _calibration(spec: str, options: RefineOptions) -> Calibration:
    return CALIBRATIONS.get(spec, Calibration()) if options.calibration == "agreement" else Calibration()


def _combine(segments: list[dict[str, Any]], records: list[dict[str, Any]], model: Any, source: ModelSource,
             fast: dict[str, Any], wav_path: str, options: RefineOptions, hotwords: str | None,
             vocabulary: set[str]) -> dict[str, Any]:
    """Combine mode: decode the speech chunks a second time, combine the words into ``segments``
    (in place), fill the per-segment ``records``; return the file-level record."""
    doubtful = sorted((w["start"] + w["end"]) / 2 for _, w in _flat_words(segments)
                      if w["probability"] < options.word_threshold)

    def count_doubtful(start: float, end: float) -> int:
        return bisect.bisect_right(doubtful, end) - bisect.bisect_left(doubtful, start)

    decode = TranscribeOptions(model=source.spec, beam_size=options.beam_size, language=fast["language"],
                               batch_size=options.batch_size)
    if not any(segment["words"] for segment in segments):  # no speech heard: no words to attach others to
        second, chunks = [], []
    else:
        second, chunks = decode_chunks(model, wav_path, decode, hotwords,
                                       None if options.chunks == "all" else count_doubtful)
    return combine_into(segments, records, second, chunks, fast["provenance"]["models"]["asr"]["spec"], source.spec,
                        options, vocabulary)


def combine_into(segments: list[dict[str, Any]], records: list[dict[str, Any]], second: list[dict[str, Any]],
                 chunks: list[Chunk], fast_spec: str, second_spec: str, options: RefineOptions,
                 vocabulary: set[str], third: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Combine the second decode's words (``second``, from the ``decoded`` ``chunks``) into the
    fast ``segments`` (in place) and fill their ``records``; return the file-level record.

    Args:
        fast_spec: The fast model's spec, for its calibration (:data:`trax.asr.combine.CALIBRATIONS`).
        second_spec: Likewise for the second model.
        vocabulary: Domain terms: a second-decode term replacing an alike-spelled fast word wins.
        third: A third decode's words (every chunk), voting in each disagreement; None for two.
    """
    words = _flat_words(segments)
    middles = [(w["start"] + w["end"]) / 2 for _, w in words]
    fast_calibration = _calibration(fast_spec, options)
    second_calibration = _calibration(second_spec, options)
    # Every chunk owns the time up to halfway to its neighbours, so each word, of either decode,
    # belongs to exactly one chunk, and words of chunks not decoded are never compared.
    edges = [(a.end + b.start) / 2 for a, b in itertools.pairwise(chunks)]
    fast_of = [[] for _ in chunks]
    second_of = [[] for _ in chunks]
    zone = 0
    for position, middle in enumerate(middles if chunks else []):
        zone = max(zone, bisect.bisect_right(edges, middle))  # contiguous runs even if times overlap a little
        fast_of[zone].append(position)
    for word in second if chunks else []:
        second_of[bisect.bisect_right(edges, (word["start"] + word["end"]) / 2)].append(word)
    replacements: list[Replacement] = []
    changes: list[dict[str, Any]] = []
    for chunk, positions, decoded in zip(chunks, fast_of, second_of, strict=True):
        if not chunk.decoded:
            continue
        first = positions[0] if positions else bisect.bisect_left(middles, chunk.start)
        regions = disagreements([token(words[i][1]["word"]) for i in positions], [token(w["word"]) for w in decoded])
        for region in regions:
            old = [words[first + k][1] for k in range(region.first, region.first_stop)]
            new = decoded[region.second:region.second_stop]
            around = old or new
            low, high = min(w["start"] for w in old + new), max(w["end"] for w in old + new)
            voter = None if third is None else [token(w["word"]) for w in third
                                                if low <= (w["start"] + w["end"]) / 2 <= high]
            verdict = decide(old, new, fast_calibration, second_calibration, options.margin, voter)
            second_wins, reason = verdict.second_wins, verdict.reason
            term = _term_fix([token(w["word"]) for w in old], [token(w["word"]) for w in new], vocabulary,
                             options.term_similarity)
            if not second_wins and term is not None:
                second_wins, reason = True, term
            start = first + region.first
            replacements.append(Replacement(start, start + len(old), new, verdict.first_confidence,
                                            verdict.second_confidence, second_wins, reason))
            _mark_change(new if second_wins else old, len(changes), words, first, len(positions), region)
            changes.append({
                "start": around[0]["start"], "end": around[-1]["end"],
                "segment": words[min(start, len(words) - 1)][0] if words else 0,
                "fast": _candidate(old, verdict.first_confidence),
                "second": _candidate(new, verdict.second_confidence),
                "chosen": "second" if second_wins else "fast", "reason": reason,
            })
    proposal = _assemble(segments, words, replacements)
    final = _assemble(segments, words, [r for r in replacements if r.accepted])
    for rep, change in zip(replacements, changes, strict=True):
        for index in sorted({change["segment"], *_targets(segments, words, rep)} if words else set()):
            record = records[index]
            summary = f"'{change['fast']['text']}' vs '{change['second']['text']}': {change['reason']}"
            if record["chosen"]:
                record["decision"] += "; " + summary
                record["refined"] = record["refined"] or rep.accepted
            else:
                record.update(chosen=True, refined=rep.accepted, reason="the fast pass and the second decode disagree",
                              decision=summary)
    _write_back(segments, records, proposal, final, widen=True)
    decoded_chunks = [c for c in chunks if c.decoded]
    taken = sum(c["chosen"] == "second" for c in changes)
    return {
        "decoded_s": round(sum(c.end - c.start for c in decoded_chunks), TIME_DIGITS),
        "status": (f"combined: {len(decoded_chunks)} of {len(chunks)} speech chunks decoded again "
                   f"({options.chunks}); {taken} of {len(changes)} disagreements went to the second decode"),
        "calibration": {"fast": asdict(fast_calibration), "second": asdict(second_calibration)},
        "chunks": [asdict(c) for c in chunks],
        "changes": changes,
    }


def _mark_change(winners: list[dict[str, Any]], number: int, words: list[tuple[int, dict[str, Any]]],
                 first: int, count: int, region: Any) -> None:
    """Give the words of disagreement ``number`` that stay in the transcript ``"change": number``
    (the index of its ``refinement.changes`` entry), so the quality model knows which words the
    two decoders disputed (:mod:`trax.quality.estimates`).

    When the winning side has no words (the other side's words were dropped), the fast word right
    after the dropped stretch carries the mark instead (the one before it at a chunk's end): that
    is where a wrongly dropped word shows as a deletion (:func:`trax.quality.evaluation.word_errors`).
    Called before the words are assembled, so the copies in the output carry it; an existing mark
    is kept.

    Args:
        winners: The winning side's words there (fast word dicts, or the second decode's).
        number: The change's index.
        words: The fast words (flat).
        first: Flat index of the chunk's first fast word; ``count`` its fast words.
        region: The disagreement (:class:`trax.asr.combine.Region`, chunk-relative indices).
    """
    if not winners:
        after, before = region.first_stop, region.first - 1
        neighbour = after if after < count else before
        winners = [words[first + neighbour][1]] if count and neighbour >= 0 else []
    for word in winners:
        word.setdefault("change", number)


def _candidate(words: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """One side of a disagreement as recorded: text, mean raw probability, calibrated confidence."""
    return {"text": join_words(w["word"] for w in words), "start": words[0]["start"] if words else None,
            "end": words[-1]["end"] if words else None, "probability": _mean([w["probability"] for w in words]),
            "confidence": confidence}


def _text(segment: dict[str, Any], words: list[dict[str, Any]]) -> str:
    """The segment's own text while its words are unchanged, else the words joined."""
    if [w["word"] for w in words] == [w["word"] for w in segment["words"]]:
        return segment["text"]
    return join_words(w["word"] for w in words)


def join_words(words: Iterable[str]) -> str:
    """Join words as Whisper writes them: a word starting with a hyphen ('up' '-guards') or made of
    punctuation only attaches to the previous one."""
    text = ""
    for word in words:
        attach = text and (word.startswith("-") or not re.search(r"\w", word))
        text += word if attach or not text else " " + word
    return text


def _targets(segments: list[dict[str, Any]], words: list[tuple[int, dict[str, Any]]], rep: Replacement) -> list[int]:
    """The segment each new word of ``rep`` joins: among the segments of the replaced stretch and
    its two neighbouring words, the last one starting before the word's midpoint."""
    low, high = max(rep.start - 1, 0), min(rep.stop, len(words) - 1)
    around = sorted({words[i][0] for i in range(low, high + 1)})
    targets = []
    for word in rep.new_words:
        middle = (word["start"] + word["end"]) / 2
        targets.append(next((s for s in reversed(around) if segments[s]["start"] <= middle), around[0]))
    return targets


def _assemble(segments: list[dict[str, Any]], words: list[tuple[int, dict[str, Any]]],
              replacements: list[Replacement]) -> list[list[dict[str, Any]]]:
    """Each segment's words after applying ``replacements`` (copies; times not yet clamped).

    New words go in at the replaced stretch's place, so order never depends on timestamps from
    two models; each goes to the segment (among those around the stretch) in which its midpoint
    starts, which keeps segment order monotonic.
    """
    removed = {i for rep in replacements for i in range(rep.start, rep.stop)}
    inserts: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for rep in replacements:
        for target, word in zip(_targets(segments, words, rep), rep.new_words, strict=True):
            inserts.setdefault(rep.start, []).append((target, dict(word)))
    result: list[list[dict[str, Any]]] = [[] for _ in segments]
    last_segment = 0
    for i in range(len(words) + 1):
        for target, word in inserts.get(i, []):
            last_segment = max(last_segment, target)
            result[last_segment].append(word)
        if i < len(words) and i not in removed:
            last_segment = max(last_segment, words[i][0])
            result[words[i][0]].append(dict(words[i][1]))
    return result


def _monotonic(words: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """Clamp word times into [start, end] and make them non-decreasing and non-overlapping."""
    cursor = start
    for word in words:
        word["start"] = round(min(max(word["start"], cursor), end), TIME_DIGITS)
        word["end"] = round(min(max(word["end"], word["start"]), end), TIME_DIGITS)
        cursor = word["end"]
    return words


def refine_file(
    wav_path: str,
    fast_path: str,
    output_path: str,
    settings: dict[str, Any],
    domains: dict[str, dict[str, Any]],
    sample_domain: str | None = None,
    remote: Callable[[str, dict[str, Any]], Any] | None = None,
) -> None:
    """Write ``transcript.refined.json`` from ``transcript.fast.json`` and ``audio.wav``.

    When there is nothing to re-decode (refinement off, or no low-confidence word) no model is
    loaded anywhere. Otherwise the re-decode runs through ``remote`` (the model server, passed in by
    the runtime) when given, else in this process; the same function builds the output in both
    cases, so the bytes agree.
    """
    options = RefineOptions.from_config(settings)
    if not options.enabled:
        copy_fast_transcript(fast_path, wav_path, output_path, settings, domains, sample_domain)
        return
    fast = read_json(fast_path)
    if options.mode == "combine":
        needs_model = combine_skip_reason(fast, options) is None
    else:
        needs_model = bool(plan_spans(fast["segments"], fast["duration"], options))
    if needs_model and remote is not None:
        log.info("refining %s via the model server", wav_path)
        refined = remote("refine", {"wav_path": wav_path, "fast_path": fast_path, "settings": settings,
                                    "domains": domains, "sample_domain": sample_domain})
    else:
        provider = (lambda adapter: load_refine_model(options, adapter=adapter)) if needs_model else None
        refined = refine_transcript(fast, wav_path, settings, domains, sample_domain, provider)
    write_json_atomic(output_path, refined, schema="transcript.refined")


def load_refine_model(options: RefineOptions, num_workers: int = 1,
                      adapter: str | None = None) -> tuple[Any, ModelSource]:
    """Load the refine model (or a domain's adapted model) in this process."""
    decode = TranscribeOptions.from_config(options.decode_settings(adapter))
    source = resolve_whisper(decode.model)
    return load_whisper(source, decode, num_workers=num_workers), source
