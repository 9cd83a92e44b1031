"""Scoring helpers shared by the tests, the benchmarks and (later) the evaluate rule."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer


@functools.cache
def _english_normalizer():  # -> whisper_normalizer.english.EnglishTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normalizer (case, punctuation, spelling variants, numbers), whitespace-collapsed."""
    return " ".join(_english_normalizer()(text).split())


@dataclass(frozen=True)
class WerResult:
    """Corpus-level word error counts (errors are summed over items before dividing)."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> WerResult:
    """WER over all items together, both sides normalized with :func:`normalize_text`.

    Items whose normalized reference is empty are skipped (WER is undefined for them).
    """
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no non-empty references to score")
    # jiwer rejects empty hypotheses; a placeholder that matches nothing counts as deletions+1 sub.
    out = jiwer.process_words([r for r, _ in pairs], [h or "<empty>" for _, h in pairs])
    ref_words = out.hits + out.substitutions + out.deletions
    return WerResult(
        wer=(out.substitutions + out.deletions + out.insertions) / ref_words,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        reference_words=ref_words,
    )
