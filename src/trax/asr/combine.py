"""Word-level combination of two (or three) decodes of the same speech, ROVER style.

The two word sequences are aligned on normalized words (lower case, letters and digits only;
:func:`disagreements`). Where they agree the first (fast) word stays, with its times. Where they
disagree (a substitution, or words only one side heard) each side gets a *calibrated* confidence,
the mean over its words of P(word right | the model's own probability) (:class:`Calibration`), and
the more confident side wins (:func:`decide`):

* a side with no words is as confident as the other side is wrong (1 - its confidence), so one
  model's extra words are kept only when they are more likely right than not (ROVER's null arc);
* the second side must beat the first by ``margin`` (ties keep the fast words);
* a third decode, when given, votes first: if its words there equal one side's, that side wins
  (two of three), whatever the confidences; otherwise confidence decides;
* sides that differ only in where words split ('woodcutters' / 'wood cutters') are no
  disagreement: the fast words stay.

Each decision keeps both candidates, their confidences and the reason, for the output file.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-4


def token(text: str) -> str:
    """A word as compared: lower case, letters and digits only ('Hello,' -> 'hello')."""
    return "".join(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of one model's word probability: ``sigmoid(slope * logit(p) + intercept)``.

    Whisper's word probability is a mean of token probabilities and each model is confident in
    its own way (tiny.en's wrong words often carry 0.6-0.8), so raw probabilities of two models are
    not comparable. The default (slope 1, intercept 0) is the identity, for models nobody
    calibrated.

    Attributes:
        slope: Multiplies the probability's logit.
        intercept: Added to it.
        source: Where the two numbers come from (recorded in the output).
    """

    slope: float = 1.0
    intercept: float = 0.0
    source: str = "identity (uncalibrated)"

    def __call__(self, probability: float) -> float:
        p = min(max(probability, EPS), 1.0 - EPS)
        return 1.0 / (1.0 + math.exp(-(self.slope * math.log(p / (1.0 - p)) + self.intercept)))


@dataclass(frozen=True)
class Region:
    """A stretch where the decodes disagree: first words ``[first, first_stop)`` against second
    words ``[second, second_stop)`` (either may be empty)."""

    first: int
    first_stop: int
    second: int
    second_stop: int


def disagreements(first: list[str], second: list[str]) -> list[Region]:
    """Where two token sequences differ (difflib, no junk heuristic), in order."""
    matcher = difflib.SequenceMatcher(None, first, second, autojunk=False)
    return [Region(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


@dataclass(frozen=True)
class Decision:
    """The outcome of one disagreement.

    Attributes:
        second_wins: Take the second decode's words.
        first_confidence: Calibrated confidence of the first side (see the module docstring).
        second_confidence: Likewise for the second side.
        reason: Why, for a person reading the file.
    """

    second_wins: bool
    first_confidence: float
    second_confidence: float
    reason: str


def mean_confidence(words: list[dict[str, Any]], calibration: Calibration) -> float | None:
    """Mean calibrated probability of ``words`` (None for no words)."""
    return sum(calibration(w["probability"]) for w in words) / len(words) if words else None


def decide(first: list[dict[str, Any]], second: list[dict[str, Any]], first_calibration: Calibration,
           second_calibration: Calibration, margin: float = 0.0, third: list[str] | None = None) -> Decision:
    """Choose between the two sides of a disagreement (see the module docstring).

    Args:
        first: The fast decode's words there (``word``, ``probability``).
        second: The second decode's words there.
        first_calibration: Maps the first model's probabilities to P(right).
        second_calibration: Likewise for the second model.
        margin: How much more confident the second side must be.
        third: A third decode's tokens over the same time, or None without a third opinion.
    """
    a, b = mean_confidence(first, first_calibration), mean_confidence(second, second_calibration)
    a = 1.0 - b if a is None else a  # both None cannot happen: a region has words on one side
    b = 1.0 - a if b is None else b
    a, b = round(a, 4), round(b, 4)
    if "".join(token(w["word"]) for w in first) == "".join(token(w["word"]) for w in second):
        return Decision(False, a, b, "the same letters, split into words differently: kept the fast words")
    if third is not None:
        if third == [token(w["word"]) for w in second] != [token(w["word"]) for w in first]:
            return Decision(True, a, b, "third decode agrees with the second")
        if third == [token(w["word"]) for w in first]:
            return Decision(False, a, b, "third decode agrees with the fast pass")
    if b > a + margin:
        return Decision(True, a, b, f"second more confident ({b:.4f} > {a:.4f} + {margin:g})")
    return Decision(False, a, b, f"fast not less confident ({b:.4f} <= {a:.4f} + {margin:g})")


def agreement(first: list[str], second: list[str]) -> list[bool]:
    """For each token of ``first``: whether ``second`` has it at the same place of the alignment."""
    agrees = [True] * len(first)
    for region in disagreements(first, second):
        agrees[region.first:region.first_stop] = [False] * (region.first_stop - region.first)
    return agrees


def fit_platt(probabilities: list[float], labels: list[bool], source: str) -> Calibration:
    """Fit :class:`Calibration` by maximum likelihood (Newton's method on the logistic loss).

    Labels need no reference transcript: ``bench/refine.py --fit`` uses :func:`agreement` with the
    other model on recordings outside the scored dev set, i.e. P(the other model hears the same
    word | this model's probability), a stand-in for P(right) when the two err independently.
    """
    import numpy as np

    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0 - EPS)
    x, y = np.log(p / (1.0 - p)), np.asarray(labels, dtype=np.float64)
    weights = np.array([1.0, 0.0])
    for _ in range(100):
        predicted = 1.0 / (1.0 + np.exp(-(weights[0] * x + weights[1])))
        gradient = np.array([np.sum((predicted - y) * x), np.sum(predicted - y)])
        w = predicted * (1.0 - predicted)
        hessian = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Calibration(round(float(weights[0]), 4), round(float(weights[1]), 4), source)


#: Platt maps of the embedded models (by model spec) used with ``refine.calibration: agreement``:
#: fitted by ``bench/refine.py --fit`` on the agreement of tiny.en (the workflow's fast pass) and
#: base (sequential chunk decode, beam 5) over columbia.16k.wav and the 14 AMI excerpts of the DER set (~980
#: words each; no reference transcripts, none of the scored dev items). Models not listed, and
#: ``refine.calibration: none``, use the identity.
CALIBRATIONS: dict[str, Calibration] = {
    "embedded:tiny.en": Calibration(0.841, 0.75, "Platt on agreement with embedded:base (bench/refine.py --fit)"),
    "embedded:base": Calibration(0.468, 1.072, "Platt on agreement with embedded:tiny.en (bench/refine.py --fit)"),
}
