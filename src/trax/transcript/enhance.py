"""Polished, readable text for each utterance of ``merged.json``: ``enhanced.json`` + ``enhanced.md``.

Two providers:

* ``rules`` (default, offline, deterministic; :mod:`trax.transcript.rules`): removes fillers (``uh``, ``um`` …) and stutter
  repeats (``I I think`` → ``I think``, ``w- want`` → ``want``), applies the domain glossary's
  canonical spellings, and fixes sentence casing (``i`` → ``I``, capital after ``.?!`` and at the
  start). It never drops a content word: only configured fillers and immediate repeats go.
* ``openai`` (any OpenAI-compatible chat API; see :mod:`trax.transcript.llm`): edits utterances in
  chunks, keeps an edit only when it stays similar to the input, and falls back to ``rules`` when
  the API fails.

Each output utterance keeps its id, speaker, times and original text, and records which provider
made its text (``source``) and whether an edit was rejected (``flagged`` + ``flag_reason``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trax.errors import TraxError
from trax.io.jsonio import iter_json_list, read_json_head, write_json_atomic, write_text_atomic
from trax.io.provenance import provenance, sha256_file
from trax.transcript.exports import to_markdown
from trax.transcript.rules import RulesOptions, enhance_rules, glossary_of


def enhance_files(merged_path: str, json_path: str, md_path: str, settings: dict[str, Any],
                  cache_dir: str | None = None) -> dict[str, Any]:
    """The ``enhance`` rule: ``merged.json`` → ``enhanced.json`` + ``enhanced.md``.

    Args:
        merged_path: ``merged.json``.
        json_path: Destination ``enhanced.json``.
        md_path: Destination ``enhanced.md``.
        settings: The ``enhance`` config section (recorded in provenance, without secrets: the
            API key is only ever read from the environment variable the section names).
        cache_dir: Where ``openai`` responses are cached (default ``settings['openai']['cache_dir']``).
    """
    # Utterances are read one at a time (the Snakemake process must not grow with the recording,
    # trax.io.jsonio); what enhance keeps of each (no words) is small.
    merged = {**read_json_head(merged_path, {"utterances"}), "utterances": iter_json_list(merged_path, "utterances")}
    rules = RulesOptions.from_config(settings.get("rules", {})).for_language(merged.get("language"))
    glossary = glossary_of(merged)
    provider = settings.get("provider", "rules")
    extra: dict[str, Any] = {}
    fallbacks: list[dict[str, Any]] = []
    if provider == "rules":
        utterances = enhance_rules(merged, rules, glossary)
    elif provider == "openai":
        from trax.transcript.llm import LLMOptions, enhance_llm

        llm = LLMOptions.from_config(settings.get("openai", {}))
        # Chunks with context on both sides: this provider holds the utterances.
        merged["utterances"] = list(merged["utterances"])
        utterances, fallbacks = enhance_llm(merged, llm, rules, glossary, cache_dir or llm.cache_dir)
        extra["llm"] = llm.describe()
    else:
        raise TraxError("enhance.provider", f"unknown provider '{provider}' (rules or openai)")
    body = {
        "sample_id": merged["sample_id"],
        "provider": provider,
        "domain": (merged.get("domain") or {}).get("name"),
        "fallbacks": fallbacks,
        "speakers": merged["speakers"],
        "utterances": utterances,
        "stats": {
            "utterances": len(utterances),
            "changed": sum(u["changed"] for u in utterances),
            "flagged": sum(u["flagged"] for u in utterances),
            "by_source": {s: sum(u["source"] == s for u in utterances) for s in ("openai", "rules", "original")},
        },
        "provenance": provenance(settings, sha256_file(merged_path), **extra),
    }
    write_json_atomic(json_path, body, schema="enhanced")
    title = f"Enhanced transcript: {merged['sample_id'] or Path(merged_path).parent.name}"
    write_text_atomic(md_path, to_markdown(body, title))
    return body
