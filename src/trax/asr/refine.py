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
already decoded it with the multilingual model; the second opinion is the same model). Combine
mode reads, decodes, combines and writes piece by piece (:class:`Combiner`, :func:`write_refined`),
so its memory does not grow with the recording; spans mode reads the WAV in pieces too but still
holds the whole transcript.
"""

from __future__ import annotations

import bisect
import difflib
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trax import progress
from trax.asr import domains as domain_lib
from trax.asr.combine import CALIBRATIONS, Calibration, decide, disagreements, token
from trax.asr.models import ModelSource, resolve_whisper
from trax.asr.second_opinion import Chunk, decode_pieces
from trax.asr.transcribe import (
    PROB_DIGITS,
    TIME_DIGITS,
    TranscribeOptions,
    load_whisper,
)
from trax.errors import TraxError
from trax.io.jsonio import iter_json_list, read_json_head, write_json_streamed
from trax.io.languages import word_separator
from trax.io.media import SAMPLE_RATE, piece_bounds, read_samples, wav_layout
from trax.io.provenance import provenance, sha256_file
from trax.process import pin_blas_threads

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

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


def _decoded_words(model: Any, wav_path: str, spans: list[Span], language: str,
                   options: RefineOptions, hotwords: str | None) -> list[list[dict[str, Any]]]:
    """Re-decode every span; return the words of each clip (absolute times).

    The WAV is read piece by piece (:func:`trax.io.media.piece_bounds`: at most 5 minutes, cut in
    pauses), since faster-whisper computes features for the whole array it is given even with
    ``clip_timestamps``: the spans starting in a piece are decoded in one call on that piece, read
    on to the end of its last span so that no span is cut. A recording of one piece is decoded in
    one call over the whole WAV, as before.
    """
    layout = wav_layout(wav_path)
    total = sum(span.clip_end - span.clip_start for span in spans)
    per_clip: list[list[dict[str, Any]]] = [[] for _ in spans]
    first = 0
    for start, stop in piece_bounds(layout):
        inside = [i for i in range(first, len(spans)) if spans[i].clip_start * SAMPLE_RATE < stop]
        if not inside:
            continue
        first = inside[-1] + 1
        offset = start / SAMPLE_RATE
        audio = read_samples(layout, start, max(stop, math.ceil(spans[inside[-1]].clip_end * SAMPLE_RATE)))
        segments, _ = model.transcribe(
            audio, language=language, beam_size=options.beam_size, temperature=0.0, word_timestamps=True,
            vad_filter=False, condition_on_previous_text=False, hotwords=hotwords,
            clip_timestamps=[t - offset for i in inside for t in (spans[i].clip_start, spans[i].clip_end)],
        )
        for segment in segments:
            for raw in segment.words or []:
                begin, end = raw.start + offset, raw.end + offset
                index = next((i for i in inside if (begin + end) / 2 <= spans[i].clip_end), inside[-1])
                per_clip[index].append({"start": round(begin, TIME_DIGITS), "end": round(end, TIME_DIGITS),
                                        "word": raw.word.strip(), "probability": round(float(raw.probability), PROB_DIGITS)})
            done = sum(max(0.0, min(segment.end + offset, s.clip_end) - s.clip_start) for s in spans)
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
    """Build the refined transcript (serialized, ``transcript.refined`` schema) from the fast one,
    in memory (benches, tests). :func:`write_refined` writes the same content, streamed.

    Args:
        fast: The fast transcript (``transcript.fast.json``).
        wav_path: The normalized audio.
        settings: The ``refine`` config section.
        domains: Domain definitions by name (:func:`trax.asr.domains.load_domains`).
        sample_domain: The sample sheet's ``domain`` for this file, if any (wins over config).
        model_provider: Returns the loaded refine model and its source for the chosen domain's
            adapter (None: the plain refine model); called only when there is something to
            re-decode. None when the caller knows nothing will be (refinement off).
    """
    head = {key: value for key, value in fast.items() if key != "segments"}

    def segments() -> Iterator[dict[str, Any]]:
        return (dict(s, words=[dict(w) for w in s["words"]]) for s in fast["segments"])

    items, finish = _refined_parts(head, segments, _fast_hash(fast), wav_path, settings, domains, sample_domain,
                                   model_provider)
    listed = list(items)
    return {**finish(), "segments": listed}


def write_refined(
    wav_path: str,
    fast_path: str,
    output_path: str,
    settings: dict[str, Any],
    domains: dict[str, dict[str, Any]],
    sample_domain: str | None,
    model_provider: Callable[[str | None], tuple[Any, ModelSource]] | None,
) -> dict[str, Any]:
    """Write ``transcript.refined.json`` (as :func:`refine_transcript` builds it, same bytes),
    reading the fast transcript and writing the output one segment at a time, so neither the model
    server nor the process that runs it grows with the recording (:mod:`trax.io.jsonio`;
    arguments as :func:`refine_transcript`). The one function the model server and the in-process
    path both run, so their bytes agree.

    Returns:
        A short summary for the job's caller: the output path and the refinement status.
    """
    head = read_json_head(fast_path, {"segments"})
    # A fast transcript is always written by Trax (jsonio.dumps), so its file's sha256 is the
    # sha256 of its serialized content that refine_transcript records.
    items, finish = _refined_parts(head, lambda: iter_json_list(fast_path, "segments"), sha256_file(fast_path),
                                   wav_path, settings, domains, sample_domain, model_provider)
    status: list[str] = []

    def finished() -> dict[str, Any]:
        refined = finish()
        status.append(refined["refinement"]["status"])
        return refined

    write_json_streamed(output_path, "segments", items, finished, schema="transcript.refined",
                        item_schema="transcript.refined.schema.yaml#/$defs/segment")
    return {"output_path": str(output_path), "status": status[0]}


def _refined_parts(
    fast: dict[str, Any],
    segments: Callable[[], Iterator[dict[str, Any]]],
    fast_sha256: str,
    wav_path: str,
    settings: dict[str, Any],
    domains: dict[str, dict[str, Any]],
    sample_domain: str | None,
    model_provider: Callable[[str | None], tuple[Any, ModelSource]] | None,
) -> tuple[Iterator[dict[str, Any]], Callable[[], dict[str, Any]]]:
    """The refined transcript as (its segments, one at a time; a function returning every other
    field, to call after the last segment).

    Combine mode streams (:class:`Combiner` over :func:`~trax.asr.second_opinion.decode_pieces`);
    spans mode reads the WAV piece by piece (:func:`_decoded_words`) but still holds the whole
    transcript (:func:`plan_spans` and :func:`splice` work on the flat list of words).

    Args:
        fast: The fast transcript without its segments.
        segments: Its segments (fresh copies, in order) on each call.
        fast_sha256: sha256 of the serialized fast transcript (for the provenance).
        Others: as :func:`refine_transcript`.
    """
    options = RefineOptions.from_config(settings)
    choice, domain, hotwords = _domain_of(fast["text"], domains, sample_domain, options)
    # Not English: the multilingual model already decoded it, so a second opinion from the refine
    # model (the same one by default) has nothing to add; the status says so.
    english = fast["language"] == "en"
    combining = options.enabled and english and options.mode == "combine"
    models = dict(fast["provenance"]["models"])
    vocabulary = vocabulary_of(domain) if options.bias else set()
    pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]] = ((s, _unchosen(s)) for s in segments())
    spans: list[Span] = []
    span_records: list[dict[str, Any]] = []
    combiner: Combiner | None = None

    def load() -> tuple[Any, ModelSource]:
        if model_provider is None:
            raise ValueError("refinement has audio to re-decode but no model")
        model, model_source = model_provider(domain["adapter"])
        models["refine"] = model_source.describe()
        pin_blas_threads()
        return model, model_source

    if options.enabled and english and options.mode == "spans":
        listed = list(pairs)
        pairs = listed
        spans = plan_spans([s for s, _ in listed], fast["duration"], options)
        if spans:
            model, _ = load()
            decoded = _decoded_words(model, wav_path, spans, fast["language"], options, hotwords)
            span_records = _apply([s for s, _ in listed], [r for _, r in listed], spans, decoded, options, vocabulary)
    if combining:
        model, model_source = load()
        combiner = Combiner(fast["provenance"]["models"]["asr"]["spec"], model_source.spec, options, vocabulary)
        pairs = combiner.run(pairs, _second_decode(model, model_source, fast, segments, wav_path, options, hotwords))
    texts: list[str] = []

    def items() -> Iterator[dict[str, Any]]:
        for segment, record in pairs:
            segment["refinement"] = record
            if segment["text"]:
                texts.append(segment["text"])
            yield segment

    def finish() -> dict[str, Any]:
        refined = _refined_head(fast, choice, domain, hotwords, spans, span_records, models, settings, wav_path,
                                fast_sha256, sample_domain, None if combiner is None else combiner.record())
        return {**refined, "text": word_separator(fast["language"]).join(texts)}

    return items(), finish


def _second_decode(model: Any, source: ModelSource, fast: dict[str, Any], segments: Callable[[], Iterator[dict[str, Any]]],
                   wav_path: str, options: RefineOptions, hotwords: str | None
                   ) -> Iterator[tuple[list[Chunk], list[dict[str, Any]]]]:
    """Combine mode's second decode, piece by piece (nothing when the fast pass heard no word:
    no words to attach others to). With ``chunks: doubtful`` the fast words' times below the
    threshold are gathered first (one float per doubtful word)."""
    if not any(segment["words"] for segment in segments()):
        return iter(())
    choose = None
    if options.chunks != "all":
        doubtful = sorted((w["start"] + w["end"]) / 2 for s in segments() for w in s["words"]
                          if w["probability"] < options.word_threshold)

        def choose(start: float, end: float) -> int:
            return bisect.bisect_right(doubtful, end) - bisect.bisect_left(doubtful, start)

    decode = TranscribeOptions(model=source.spec, beam_size=options.beam_size, language=fast["language"],
                               batch_size=options.batch_size)
    return decode_pieces(model, wav_path, decode, hotwords, choose)


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
    """Everything of the refined transcript but its segments and text (``combined``: the
    :meth:`Combiner.record`, in combine mode)."""
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
        status = combined["status"]
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
                         | {words[span.first][0], words[span.last][0]} | set(_targets(words.__getitem__, len(words) - 1, lambda s: segments[s]["start"], rep)))
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
    """:func:`_write_back_one` for every chosen segment, in order."""
    previous_end = 0.0
    for index, (segment, record) in enumerate(zip(segments, records, strict=True)):
        if record["chosen"]:
            following = segments[index + 1]["start"] if index + 1 < len(segments) else None
            _write_back_one(segment, record, proposal[index], final[index], previous_end, following, widen)
        previous_end = segment["end"]


def _write_back_one(segment: dict[str, Any], record: dict[str, Any], proposal: list[dict[str, Any]],
                    final: list[dict[str, Any]], previous_end: float, next_start: float | None,
                    widen: bool = False) -> None:
    """Set a chosen segment's words and text to ``final`` and its record's proposal to
    ``proposal`` (both from :func:`_assemble`), with times made monotonic inside the segment.

    Args:
        previous_end: The previous segment's end (as written; 0 for the first).
        next_start: The next segment's start before any change; None for the last segment.
        widen: First widen the segment to its new words' times, up to its neighbours' bounds (a
            second decode's word keeps its own times where they do not collide with others').
    """
    if widen and final:
        high = max(segment["end"], final[-1]["end"]) if next_start is None else next_start
        segment["start"] = round(max(previous_end, min(segment["start"], final[0]["start"])), TIME_DIGITS)
        segment["end"] = round(min(high, max(segment["end"], final[-1]["end"])), TIME_DIGITS)
        segment["end"] = max(segment["end"], segment["start"])
    candidate = _monotonic(proposal, segment["start"], segment["end"])
    record["text_after"] = _text(segment, candidate)
    record["confidence_after"] = _confidence(candidate)
    kept = _monotonic(final, segment["start"], segment["end"])
    segment["text"] = _text(segment, kept)
    segment["words"] = kept


def _calibration(spec: str, options: RefineOptions) -> Calibration:
    return CALIBRATIONS.get(spec, Calibration()) if options.calibration == "agreement" else Calibration()


def combine_into(segments: list[dict[str, Any]], records: list[dict[str, Any]], second: list[dict[str, Any]],
                 chunks: list[Chunk], fast_spec: str, second_spec: str, options: RefineOptions,
                 vocabulary: set[str], third: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Combine the second decode's words (``second``, from the ``decoded`` ``chunks``) into the
    fast ``segments`` (in place) and fill their ``records``; return the file-level record.

    The whole recording at once (benches, tests): :class:`Combiner` with one piece.

    Args:
        fast_spec: The fast model's spec, for its calibration (:data:`trax.asr.combine.CALIBRATIONS`).
        second_spec: Likewise for the second model.
        vocabulary: Domain terms: a second-decode term replacing an alike-spelled fast word wins.
        third: A third decode's words (every chunk), voting in each disagreement; None for two.
    """
    combiner = Combiner(fast_spec, second_spec, options, vocabulary, third)
    for _ in combiner.run(zip(segments, records, strict=True), [(chunks, second)]):
        pass  # segments and records are changed in place
    return combiner.record()


class Combiner:
    """Combine mode, streamed: fast segments and the second decode's pieces go in, refined
    segments come out in order, and only a window around the chunk being combined is held.

    Each chunk's disagreements are resolved on their own (:meth:`_combine_chunk`); the window
    gives the same result as the whole transcript at once (checked against the earlier
    whole-list code on real audio and on random transcripts cut into random pieces): every chunk
    owns the time up to halfway to its neighbours, so a chunk is combined once the next chunk is
    known (its piece decoded) and a fast word beyond it has been read. A fast segment is written
    once no later disagreement can reach it: a change reaches back at most to the word before its
    first one, so every segment before the one holding the combined chunks' last word is final.
    Holds one piece's second-decode words and the fast words of about one chunk, whatever the
    recording's length; what grows is the file-level record (one entry per chunk and per
    disagreement, a few hundred bytes each).
    """

    def __init__(self, fast_spec: str, second_spec: str, options: RefineOptions, vocabulary: set[str],
                 third: list[dict[str, Any]] | None = None) -> None:
        self.options = options
        self.vocabulary = vocabulary
        self.third = third
        self.fast_calibration = _calibration(fast_spec, options)
        self.second_calibration = _calibration(second_spec, options)
        self.chunks: list[Chunk] = []
        self.edges: list[float] = []  # halfway between neighbouring chunks
        self.changes: list[dict[str, Any]] = []
        self._second_of: dict[int, list[dict[str, Any]]] = {}  # chunk -> its second-decode words
        self._unrouted: list[dict[str, Any]] = []  # second-decode words whose chunk is not known yet
        self._pieces_done = False
        self._fast: Iterator[tuple[dict[str, Any], dict[str, Any]]] = iter(())
        self._fast_done = False
        # The window: segments (and records) not yet written, by index; their words flat, from
        # global position ``_base`` on, with each word's chunk once known.
        self._segments: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._read = 0  # segments read
        self._written = 0  # segments written
        self._words: list[tuple[int, dict[str, Any]]] = []
        self._base = 0
        self._zones: list[int] = []  # chunk of each of the window's first len(_zones) words
        self._zone = 0
        self._closed = 0  # chunks combined
        self._first = 0  # global position of the first word of chunk ``_closed``
        self._proposal = _Assembler()
        self._final = _Assembler()
        self._previous_end = 0.0

    # --- input ---------------------------------------------------------------------------------
    def run(self, segments: Iterable[tuple[dict[str, Any], dict[str, Any]]],
            pieces: Iterable[tuple[list[Chunk], list[dict[str, Any]]]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield each fast segment, combined, with its record, in order.

        Args:
            segments: The fast segments with their (unchosen) records, in order; changed in place.
            pieces: The second decode's (chunks, words) per piece, in order
                (:func:`trax.asr.second_opinion.decode_pieces`); consumed as the segments are.
        """
        self._fast = iter(segments)
        for chunks, words in pieces:
            for chunk in chunks:
                if self.chunks:
                    self.edges.append((self.chunks[-1].end + chunk.start) / 2)
                self.chunks.append(chunk)
            self._route([*self._unrouted, *words])
            yield from self._pump()
        self._pieces_done = True
        self._route(self._unrouted)
        yield from self._pump()
        yield from self._emit(flush=True)

    def record(self) -> dict[str, Any]:
        """The file-level record (once :meth:`run` is exhausted)."""
        decoded_chunks = [c for c in self.chunks if c.decoded]
        taken = sum(c["chosen"] == "second" for c in self.changes)
        return {
            "decoded_s": round(sum(c.end - c.start for c in decoded_chunks), TIME_DIGITS),
            "status": (f"combined: {len(decoded_chunks)} of {len(self.chunks)} speech chunks decoded again "
                       f"({self.options.chunks}); {taken} of {len(self.changes)} disagreements went to the second decode"),
            "calibration": {"fast": asdict(self.fast_calibration), "second": asdict(self.second_calibration)},
            "chunks": [asdict(c) for c in self.chunks],
            "changes": self.changes,
        }

    def _known(self, zone: int) -> bool:
        """Whether a word whose middle falls in ``zone`` (bisect over the known edges) really
        belongs there: the last known chunk may still lose it to a chunk of the next piece."""
        return self._pieces_done or zone < len(self.edges)

    def _route(self, words: list[dict[str, Any]]) -> None:
        self._unrouted = []
        for word in words:
            zone = bisect.bisect_right(self.edges, (word["start"] + word["end"]) / 2)
            if self._known(zone):
                # A later piece's words start after its own first chunk, so never in a chunk
                # already combined (which waits for the chunk after it).
                self._second_of.setdefault(zone, []).append(word)
            else:
                self._unrouted.append(word)

    def _pump(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Assign fast words to chunks, combine the chunks that are complete, write what is final;
        read more fast segments while their words can be placed."""
        while True:
            self._assign()
            while self._closed < len(self.chunks) and self._complete(self._closed):
                self._combine_chunk()
            yield from self._emit()
            if self._fast_done or len(self._zones) < len(self._words) or not self.chunks and not self._pieces_done:
                return
            try:
                segment, record = next(self._fast)
            except StopIteration:
                self._fast_done = True
                continue
            index = self._read
            self._read += 1
            self._segments[index] = (segment, record)
            self._words += [(index, word) for word in segment["words"]]

    def _assign(self) -> None:
        """Give each window word its chunk, while the chunk is certain: by its middle, never
        before the previous word's chunk (times of two overlapping words keep runs contiguous)."""
        if not self.chunks:
            if self._pieces_done:  # no speech chunk at all: every word stays as it is
                self._zones += [0] * (len(self._words) - len(self._zones))
            return
        while len(self._zones) < len(self._words):
            word = self._words[len(self._zones)][1]
            zone = bisect.bisect_right(self.edges, (word["start"] + word["end"]) / 2)
            if not self._known(zone):
                return
            self._zone = max(self._zone, zone)
            self._zones.append(self._zone)

    def _complete(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` has all its words of both decodes."""
        if not self._known(chunk):
            return False
        if self._zone > chunk:  # a later chunk's fast word has been read
            return True
        return self._fast_done and len(self._zones) == len(self._words)

    def _word(self, position: int) -> tuple[int, dict[str, Any]]:
        return self._words[position - self._base]

    def _last_position(self) -> int:
        return self._base + len(self._words) - 1

    # --- one chunk -------------------------------------------------------------------------------
    def _combine_chunk(self) -> None:
        """Resolve chunk ``_closed``'s disagreements: mark the disputed words, record each change,
        and queue the replacements for assembly."""
        number = self._closed
        chunk = self.chunks[number]
        first = self._first
        count = 0
        offset = first - self._base
        while offset + count < len(self._zones) and self._zones[offset + count] == number:
            count += 1
        decoded = self._second_of.pop(number, [])
        self._closed += 1
        self._first = first + count
        if not chunk.decoded:
            return
        positions = range(first, first + count)
        fast_words = [self._word(i)[1] for i in positions]
        regions = disagreements([token(w["word"]) for w in fast_words], [token(w["word"]) for w in decoded])
        for region in regions:
            old = fast_words[region.first:region.first_stop]
            new = decoded[region.second:region.second_stop]
            around = old or new
            low, high = min(w["start"] for w in old + new), max(w["end"] for w in old + new)
            voter = None if self.third is None else [token(w["word"]) for w in self.third
                                                     if low <= (w["start"] + w["end"]) / 2 <= high]
            verdict = decide(old, new, self.fast_calibration, self.second_calibration, self.options.margin, voter)
            second_wins, reason = verdict.second_wins, verdict.reason
            term = _term_fix([token(w["word"]) for w in old], [token(w["word"]) for w in new], self.vocabulary,
                             self.options.term_similarity)
            if not second_wins and term is not None:
                second_wins, reason = True, term
            start = first + region.first
            rep = Replacement(start, start + len(old), new, verdict.first_confidence, verdict.second_confidence,
                              second_wins, reason)
            _mark_change(new if second_wins else old, len(self.changes), fast_words, region)
            has_words = self._last_position() >= 0
            change = {
                "start": around[0]["start"], "end": around[-1]["end"],
                "segment": self._word(min(start, self._last_position()))[0] if has_words else 0,
                "fast": _candidate(old, verdict.first_confidence),
                "second": _candidate(new, verdict.second_confidence),
                "chosen": "second" if second_wins else "fast", "reason": reason,
            }
            self.changes.append(change)
            targets = self._targets(rep) if has_words else []
            self._proposal.add(rep, targets)
            if rep.accepted:
                self._final.add(rep, targets)
            summary = f"'{change['fast']['text']}' vs '{change['second']['text']}': {change['reason']}"
            for index in sorted({change["segment"], *targets} if has_words else set()):
                record = self._segments[index][1]
                if record["chosen"]:
                    record["decision"] += "; " + summary
                    record["refined"] = record["refined"] or rep.accepted
                else:
                    record.update(chosen=True, refined=rep.accepted,
                                  reason="the fast pass and the second decode disagree", decision=summary)

    def _targets(self, rep: Replacement) -> list[int]:
        """:func:`_targets` over the window."""
        return _targets(self._word, self._last_position(), lambda index: self._segments[index][0]["start"], rep)

    # --- output --------------------------------------------------------------------------------
    def _emit(self, flush: bool = False) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Assemble and yield the segments no later chunk can change (all, when ``flush``)."""
        if flush:
            until, last_segment = self._last_position() + 2, self._read
        elif not self.chunks and self._pieces_done:  # no speech chunk: nothing to combine
            until, last_segment = self._base + len(self._words), self._read - 1
        elif self._first == 0:
            return
        else:
            until, last_segment = self._first, self._word(self._first - 1)[0]
        for assembler in (self._proposal, self._final):
            assembler.advance(until, self._word)
        while self._written < last_segment:
            index = self._written
            segment, record = self._segments.pop(index)
            following = self._segments.get(index + 1)
            if record["chosen"]:
                _write_back_one(segment, record, self._proposal.result.pop(index, []),
                                self._final.result.pop(index, []), self._previous_end,
                                None if following is None else following[0]["start"], widen=True)
            self._proposal.result.pop(index, None)
            self._final.result.pop(index, None)
            self._previous_end = segment["end"]
            self._written += 1
            yield segment, record
        drop = 0
        while drop < len(self._words) and self._words[drop][0] < self._written and drop < len(self._zones):
            drop += 1
        del self._words[:drop], self._zones[:drop]
        self._base += drop


class _Assembler:
    """:func:`_assemble`, fed one replacement at a time and run over the words as they become final."""

    def __init__(self) -> None:
        self.result: dict[int, list[dict[str, Any]]] = {}
        self.position = 0
        self.last_segment = 0
        self.inserts: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self.removed: set[int] = set()

    def add(self, rep: Replacement, targets: list[int]) -> None:
        self.removed.update(range(rep.start, rep.stop))
        self.inserts.setdefault(rep.start, []).extend(zip(targets, rep.new_words, strict=True))

    def advance(self, until: int, word_at: Callable[[int], tuple[int, dict[str, Any]]]) -> None:
        """Place the words before global position ``until`` (and what is inserted before them);
        ``until`` one past the last word places what is inserted after it."""
        while self.position < until:
            i = self.position
            for target, word in self.inserts.pop(i, []):
                self.last_segment = max(self.last_segment, target)
                self.result.setdefault(self.last_segment, []).append(dict(word))
            try:
                index, word = word_at(i)
            except IndexError:
                index = None
            if index is not None and i not in self.removed:
                self.last_segment = max(self.last_segment, index)
                self.result.setdefault(index, []).append(dict(word))
            self.removed.discard(i)
            self.position += 1


def _mark_change(winners: list[dict[str, Any]], number: int, chunk_words: list[dict[str, Any]], region: Any) -> None:
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
        chunk_words: The chunk's fast words.
        region: The disagreement (:class:`trax.asr.combine.Region`, chunk-relative indices).
    """
    if not winners:
        count = len(chunk_words)
        after, before = region.first_stop, region.first - 1
        neighbour = after if after < count else before
        winners = [chunk_words[neighbour]] if count and neighbour >= 0 else []
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


def _targets(word_at: Callable[[int], tuple[int, dict[str, Any]]], last: int, start_of: Callable[[int], float],
             rep: Replacement) -> list[int]:
    """The segment each new word of ``rep`` joins: among the segments of the replaced stretch and
    its two neighbouring words, the last one starting before the word's midpoint.

    Args:
        word_at: (segment index, word) at a flat word position.
        last: The last flat position (of the whole transcript, or of what has been read of it).
        start_of: A segment's start (before any change).
    """
    low, high = max(rep.start - 1, 0), min(rep.stop, last)
    around = sorted({word_at(i)[0] for i in range(low, high + 1)})
    targets = []
    for word in rep.new_words:
        middle = (word["start"] + word["end"]) / 2
        targets.append(next((s for s in reversed(around) if start_of(s) <= middle), around[0]))
    return targets


def _assemble(segments: list[dict[str, Any]], words: list[tuple[int, dict[str, Any]]],
              replacements: list[Replacement]) -> list[list[dict[str, Any]]]:
    """Each segment's words after applying ``replacements`` (copies; times not yet clamped); see
    :class:`_Assembler`."""
    assembler = _Assembler()
    for rep in replacements:
        assembler.add(rep, _targets(words.__getitem__, len(words) - 1, lambda s: segments[s]["start"], rep))
    assembler.advance(len(words) + 1, words.__getitem__)
    return [assembler.result.get(index, []) for index in range(len(segments))]


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

    When there is nothing to re-decode (refinement off, not English, or in spans mode no
    low-confidence word) no model is loaded anywhere. Otherwise the model server (``remote``,
    passed in by the runtime) writes the file when given, else this process does; both run
    :func:`write_refined`, so the bytes agree, and nothing that grows with the recording crosses
    the socket.
    """
    options = RefineOptions.from_config(settings)
    needs_model = False
    if options.enabled and read_json_head(fast_path, {"segments"})["language"] == "en":
        needs_model = options.mode == "combine" or any(
            w["probability"] < options.word_threshold for s in iter_json_list(fast_path, "segments") for w in s["words"])
    if needs_model and remote is not None:
        log.info("refining %s via the model server", wav_path)
        remote("refine", {"wav_path": wav_path, "fast_path": fast_path, "output_path": output_path,
                          "settings": settings, "domains": domains, "sample_domain": sample_domain})
        return
    provider = (lambda adapter: load_refine_model(options, adapter=adapter)) if needs_model else None
    write_refined(wav_path, fast_path, output_path, settings, domains, sample_domain, provider)


def load_refine_model(options: RefineOptions, num_workers: int = 1,
                      adapter: str | None = None) -> tuple[Any, ModelSource]:
    """Load the refine model (or a domain's adapted model) in this process."""
    decode = TranscribeOptions.from_config(options.decode_settings(adapter))
    source = resolve_whisper(decode.model)
    return load_whisper(source, decode, num_workers=num_workers), source
