"""The offline ``rules`` enhancement provider: deterministic edits of one utterance's text.

Removes fillers (``uh``, ``um`` …) and stutter repeats (``I I think`` → ``I think``, ``w- want`` →
``want``), applies the domain glossary's canonical spellings, and fixes sentence casing (``i`` →
``I``, capital after ``.?!`` and at the start). It never drops a content word: only configured
fillers and immediate repeats go. Also the fallback of :mod:`trax.transcript.llm`.

The lists are per language (:meth:`RulesOptions.for_language`): the top-level ones are English;
``languages`` holds other languages' fillers; a language without an entry loses no word at all
(English "er" is not removed from German, where it means "he"), and repeats are collapsed only
where configured (French "nous nous", German "die die" are grammatical).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from trax.errors import TraxError

SIMILARITY_DIGITS = 4
#: Hesitation sounds with no content. Backchannels such as "mhm"/"uh-huh" answer a question
#: ("yes"), so they are not in the default list.
DEFAULT_FILLERS = ("uh", "um", "uhm", "umm", "er", "erm", "ah", "hmm", "mm")
#: Words whose immediate repetition is often grammatical ("I know that that is", "she had had").
DEFAULT_KEEP_REPEATS = ("that", "had", "very", "no", "bye", "hello", "ha")
#: Hesitation sounds of other languages (``enhance.rules.languages``); none is a word of its language.
DEFAULT_LANGUAGE_FILLERS = {
    "de": ("äh", "ähm", "öh", "öhm", "hm"),
    "es": ("eh", "ehm", "mmm"),
    "fr": ("euh", "heu", "hum"),
}
_TOKEN = re.compile(r"\S+")
_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")
_PRONOUN_I = re.compile(r"\bi(?=$|['’](?:m|ll|ve|d|s)\b|\b)")


@dataclass(frozen=True)
class RulesOptions:
    """Settings of the offline ``rules`` provider (``enhance.rules``).

    Attributes:
        fillers: Words removed wherever they stand alone (case-insensitive, punctuation ignored).
        remove_repeats: Collapse immediate repeats of a word or a two-word phrase (stutters).
        keep_repeats: Words whose repetition is kept (often grammatical).
        fix_casing: Capitalise sentence starts (and the pronoun "I" in English).
        languages: Other languages' settings: code -> ``fillers`` (and optionally
            ``remove_repeats``, default false, and ``keep_repeats``). The fields above are English's.
        language: The language these options apply to.
    """

    fillers: tuple[str, ...] = DEFAULT_FILLERS
    remove_repeats: bool = True
    keep_repeats: tuple[str, ...] = DEFAULT_KEEP_REPEATS
    fix_casing: bool = True
    languages: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {code: {"fillers": list(words)} for code, words in DEFAULT_LANGUAGE_FILLERS.items()})
    language: str = "en"

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> RulesOptions:
        values = {key: settings[key] for key in cls.__dataclass_fields__ if key in settings and key != "language"}
        for key in ("fillers", "keep_repeats"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def for_language(self, language: str | None) -> RulesOptions:
        """The options for a transcript in ``language`` (English's when None or ``en``)."""
        if language in (None, "en"):
            return self
        own = self.languages.get(language, {})
        return dataclasses.replace(self, fillers=tuple(own.get("fillers", ())),
                                   remove_repeats=bool(own.get("remove_repeats", False)),
                                   keep_repeats=tuple(own.get("keep_repeats", ())), language=language)


@dataclass(frozen=True)
class Glossary:
    """Canonical spellings: ``{canonical: [variant, ...]}`` from a domain's ``glossary``
    (``config/domains/<name>.yaml``, carried through the refined transcript and ``merged.json``).

    A variant (or the canonical term in another case) matched as whole words, case-insensitively,
    is replaced by the canonical spelling. Longer variants are tried first.
    """

    terms: dict[str, list[str]] = field(default_factory=dict)

    def pattern(self) -> tuple[re.Pattern[str] | None, dict[str, str]]:
        lookup: dict[str, str] = {}
        for canonical, variants in sorted(self.terms.items()):
            for variant in [canonical, *variants]:
                lookup.setdefault(variant.casefold(), canonical)
        if not lookup:
            return None, lookup
        alternatives = sorted(lookup, key=lambda v: (-len(v), v))
        regex = re.compile(r"(?<![\w'])(" + "|".join(re.escape(v) for v in alternatives) + r")(?![\w'])", re.IGNORECASE)
        return regex, lookup

    def apply(self, text: str) -> str:
        regex, lookup = self.pattern()
        if regex is None:
            return text
        return regex.sub(lambda m: lookup[m.group(0).casefold()], text)


def glossary_of(merged: dict[str, Any]) -> Glossary:
    """The glossary of the recording's domain, as carried into ``merged.json`` from the refined
    transcript (``domain.glossary``: ``{canonical: [variants]}``); empty when there is none."""
    domain = merged.get("domain") or {}
    raw = domain.get("glossary") or {}
    if not isinstance(raw, dict):
        raise TraxError(f"domain '{domain.get('name')}'", "glossary must map canonical spellings to lists of variants")
    terms = {}
    for canonical, variants in raw.items():
        variants = [variants] if isinstance(variants, str) else list(variants or [])
        terms[str(canonical).strip()] = [str(v).strip() for v in variants if str(v).strip()]
    return Glossary(terms)


def _bare(token: str) -> str:
    return _EDGE_PUNCT.sub("", token).casefold()


def remove_disfluencies(text: str, options: RulesOptions) -> str:
    """Drop filler tokens, partial-word stutters (``w- want``) and immediate repeats."""
    fillers = {f.casefold() for f in options.fillers}
    keep = {k.casefold() for k in options.keep_repeats}
    tokens = [t for t in _TOKEN.findall(text) if _bare(t) not in fillers or not _bare(t)]
    if not options.remove_repeats:
        return " ".join(tokens)
    out: list[str] = []
    for index, token in enumerate(tokens):
        bare = _bare(token)
        following = _bare(tokens[index + 1]) if index + 1 < len(tokens) else ""
        if token.endswith("-") and bare and following.startswith(bare):
            continue  # "w- want": a cut-off start of the next word
        if out and bare and bare not in keep and _bare(out[-1]) == bare:
            out[-1] = token  # keep the later copy: it carries the punctuation that ends the phrase
            continue
        out.append(token)
    return " ".join(_collapse_bigrams(out, keep))


def _collapse_bigrams(tokens: list[str], keep: set[str]) -> list[str]:
    """``I think I think so`` → ``I think so``: drop the first copy of a repeated two-word phrase."""
    out: list[str] = []
    for token in tokens:
        out.append(token)
        if len(out) >= 4:
            a, b, c, d = (_bare(t) for t in out[-4:])
            if a and b and (a, b) == (c, d) and not {a, b} <= keep:
                del out[-4:-2]
    return out


def fix_casing(text: str, pronoun_i: bool = True) -> str:
    """Capitalise the first letter, letters after ``.?!``, and (``pronoun_i``: English) the pronoun
    ``i`` (in Italian "i" is an article)."""
    if pronoun_i:
        text = _PRONOUN_I.sub("I", text)
    chars = list(text)
    capitalise = True
    for index, char in enumerate(chars):
        if capitalise and char.isalpha():
            chars[index] = char.upper()
            capitalise = False
        elif char in ".?!":
            capitalise = True
        elif char.isalnum():
            capitalise = False
    return "".join(chars)


def rules_edit(text: str, options: RulesOptions, glossary: Glossary) -> str:
    """The ``rules`` provider on one utterance."""
    edited = remove_disfluencies(text, options)
    edited = glossary.apply(edited)
    if options.fix_casing:
        edited = fix_casing(edited, pronoun_i=options.language == "en")
    return edited


def similarity(original: str, edited: str) -> float:
    """Character similarity (0–1) of two texts, ignoring case and punctuation.

    ``difflib.SequenceMatcher`` ratio on lowercased text with punctuation removed and spaces
    collapsed, so capitalisation and punctuation edits count as no change while rewording does.
    """
    def norm(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s']", " ", text.casefold()).split())

    a, b = norm(original), norm(edited)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def enhanced_utterance(utterance: dict[str, Any], text: str, source: str, flag_reason: str | None = None) -> dict[str, Any]:
    """One ``enhanced.json`` utterance."""
    return {
        "id": utterance["id"],
        "speaker": utterance["speaker"],
        "start": utterance["start"],
        "end": utterance["end"],
        "original": utterance["text"],
        "text": text,
        "source": source,
        "changed": text != utterance["text"],
        "flagged": flag_reason is not None,
        "flag_reason": flag_reason,
        "similarity": round(similarity(utterance["text"], text), SIMILARITY_DIGITS),
    }


def enhance_rules(merged: dict[str, Any], options: RulesOptions, glossary: Glossary) -> list[dict[str, Any]]:
    """Apply the ``rules`` provider to every utterance."""
    return [enhanced_utterance(u, rules_edit(u["text"], options, glossary), "rules") for u in merged["utterances"]]
