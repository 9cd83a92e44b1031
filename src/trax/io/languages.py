"""Language codes and the writing conventions that follow from them (shared by every stage).

Whisper writes Chinese, Japanese, Thai, Lao, Burmese and Cantonese without spaces between words
(faster-whisper splits their words at token boundaries, not at spaces), so joining their words
with spaces, or measuring subtitle lines in characters, would be wrong for them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from trax.errors import TraxError

#: Language codes Whisper knows (faster-whisper's ``tokenizer._LANGUAGE_CODES``; a test checks the
#: copy). Kept here so validating a config or sample sheet does not import faster-whisper.
WHISPER_LANGUAGES = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de",
    "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht",
    "hu", "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt",
    "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl",
    "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta",
    "te", "tg", "th", "tk", "tl", "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
)  # fmt: skip

#: Languages written without spaces between words (faster-whisper's unicode-split set).
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
#: Languages scored by character error rate: words are not space-delimited (or, for Korean,
#: spacing varies so much between transcribers that word counts mislead).
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "lo", "my", "yue"})


def check_language(value: str | None, where: str) -> str | None:
    """``value`` when it is None or a Whisper language code.

    Raises:
        TraxError: ``<where>: unknown language '<value>'; ...`` (one line).
    """
    if value is None or value in WHISPER_LANGUAGES:
        return value
    raise TraxError(where, f"unknown language {value!r}; use a Whisper language code such as en, es, de, fr, zh, ja")


def word_separator(language: str | None) -> str:
    """What goes between two words of ``language``: nothing for the no-space scripts, else a space."""
    return "" if language in NO_SPACE_LANGUAGES else " "


def join_words(words: Iterable[str], language: str | None = None) -> str:
    """Words joined as the language writes them (see :func:`word_separator`)."""
    return word_separator(language).join(words)


def display_width(text: str) -> int:
    """Columns ``text`` takes on screen: East Asian wide and fullwidth characters count 2,
    combining marks 0, everything else 1 (``unicodedata.east_asian_width``)."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
