"""Domains: vocabulary that detects what a recording is about and biases its refinement.

A domain is one YAML file ``<name>.yaml`` in the domains folder (``config/domains/`` by default,
``refine.domains_dir`` to use another), checked against ``workflow/schemas/domain.schema.yaml``:

* ``keywords`` — words and phrases whose occurrences in the fast transcript vote for the domain;
* ``hotwords`` and ``initial_prompt`` — text that biases the refine model's re-decode;
* ``glossary`` — canonical spelling → variants a recognizer may write instead (used downstream by
  enhancement to fix spellings);
* ``adapter`` — optional adapted model (a directory or name) for this domain.

Users add a domain by adding a file. ``domain: auto`` scores every domain on the fast transcript
(:func:`detect`); a sample sheet's ``domain`` column or ``refine.domain`` pins one instead.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trax.errors import TraxError

#: The domain used when nothing else is chosen (auto-detection found too little evidence).
FALLBACK = "general"
AUTO = "auto"


@dataclass(frozen=True)
class Domain:
    """One domain definition (a ``config/domains/<name>.yaml`` file)."""

    name: str
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    hotwords: list[str] = field(default_factory=list)
    initial_prompt: str | None = None
    glossary: dict[str, list[str]] = field(default_factory=dict)
    adapter: str | None = None

    def serialize(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bias_text(self) -> str | None:
        """The text given to faster-whisper as ``hotwords`` for every re-decoded clip: the prompt
        followed by the hotwords. faster-whisper uses ``initial_prompt`` only for the first
        30 s window of a call, while ``hotwords`` go into every window's prompt, so both are
        passed this way to bias every clip alike. None when the domain has neither."""
        parts = [self.initial_prompt.strip()] if self.initial_prompt and self.initial_prompt.strip() else []
        if self.hotwords:
            parts.append(", ".join(self.hotwords) + ".")
        return " ".join(parts) or None


def load_domains(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate every ``*.yaml`` domain file in ``folder``, as plain dicts by name.

    Plain dicts (not :class:`Domain`) so the Snakefile can pass them as rule params: editing a
    domain file then reruns refinement.

    Raises:
        TraxError: A missing folder, no ``general`` domain, or a file that fails the schema.
    """
    from jsonschema import ValidationError

    from trax.io.schemas import validate

    folder = Path(folder)
    if not folder.is_dir():
        raise TraxError(folder, "domains folder does not exist (refine.domains_dir)")
    domains = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            validate(data, "domain")
        except (yaml.YAMLError, ValidationError) as exc:
            message = exc.message if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
            raise TraxError(path, f"invalid domain file: {message}") from None
        domains[path.stem] = Domain(name=path.stem, **data).serialize()
    if FALLBACK not in domains:
        raise TraxError(folder, f"domains folder needs a '{FALLBACK}.yaml' (the fallback domain)")
    return domains


def _normalize(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+(?:['’][a-z]+)?", text.lower())) + " "


def keyword_hits(text: str, keywords: list[str]) -> int:
    """Occurrences of ``keywords`` in ``text`` (case-insensitive, whole words; phrases allowed)."""
    haystack = _normalize(text)
    return sum(haystack.count(needle) for needle in {_normalize(k) for k in keywords} if needle.strip())


@dataclass
class DomainChoice:
    """The domain used for one recording and why.

    Attributes:
        name: The chosen domain.
        source: ``auto`` (detected), ``config`` (``refine.domain``) or ``sample_sheet``.
        scores: Per domain, keyword hits per 100 words of the fast transcript (auto only).
        hits: Per domain, raw keyword hits (auto only).
        reason: One sentence saying why this domain was chosen.
    """

    name: str
    source: str
    scores: dict[str, float]
    hits: dict[str, int]
    reason: str


def detect(text: str, domains: dict[str, dict[str, Any]], min_hits: int) -> DomainChoice:
    """Score every domain on ``text`` and pick the best one.

    Args:
        text: The fast transcript's text.
        domains: Domain definitions by name (from :func:`load_domains`).
        min_hits: Keyword hits the best domain needs; with fewer, the evidence is too thin and the
            fallback ``general`` is used. 2 by default: one stray word ("data", "patient") should
            not switch a recording's vocabulary.

    Ties at the top go to the fallback, so the choice never depends on file order.
    """
    words = max(len(_normalize(text).split()), 1)
    hits = {name: keyword_hits(text, d["keywords"]) for name, d in sorted(domains.items())}
    scores = {name: round(100.0 * count / words, 2) for name, count in hits.items()}
    best = max(hits.values(), default=0)
    leaders = [name for name, count in hits.items() if count == best]
    if best < min_hits:
        return DomainChoice(FALLBACK, AUTO, scores, hits,
                            f"no domain reached {min_hits} keyword hits (best {best}); using the fallback")
    if len(leaders) > 1:
        return DomainChoice(FALLBACK, AUTO, scores, hits, f"tie between {', '.join(leaders)}; using the fallback")
    return DomainChoice(leaders[0], AUTO, scores, hits, f"most keyword hits ({best} in {words} words)")


def choose(
    text: str, domains: dict[str, dict[str, Any]], requested: str, min_hits: int, source: str = "config"
) -> DomainChoice:
    """The domain for one recording: ``requested`` when it names a domain, detected when ``auto``.

    Raises:
        TraxError: ``requested`` names no known domain.
    """
    if requested == AUTO:
        return detect(text, domains, min_hits)
    if requested not in domains:
        raise TraxError(f"domain '{requested}'", f"unknown domain; known: {', '.join(sorted(domains))} (or auto)")
    label = "sample sheet" if source == "sample_sheet" else "config refine.domain"
    return DomainChoice(requested, source, {}, {}, f"set by {label}")
