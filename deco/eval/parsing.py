"""Turning free-form model answers into the labels a scorer compares: yes/no, an option letter, a box.

Each parser follows the rule of the scorer LLaVA-1.5 reports with, and returns None when the
answer cannot be read (the metric then counts it as wrong and tallies it as unparsed):

* `parse_yes_no_pope`: llava/eval/eval_pope.py — keep the text before the first period, drop
  commas, answer "no" if a word is "No", "no" or "not", else "yes" (never None; the second
  return value says whether the answer said "yes" explicitly or only defaulted to it).
* `parse_yes_no_mme`: MME's eval_tool/calculation.py — "yes"/"no" exactly, else whichever of
  the two appears in the first four characters, else None ("other").
* `parse_option`: option letters as in llava/eval/eval_science_qa.py (a bare letter, "B. ...",
  "The answer is B.") extended with "(B)", "B)" and a unique match of an option's text.
* `parse_box`: the first "[x1, y1, x2, y2]" (LLaVA-1.5 prints normalised boxes this way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deco.eval.normalize import normalize_text


def parse_yes_no_pope(text: str) -> tuple[str, bool]:
    """("yes" | "no", explicit) by LLaVA's POPE rule; explicit is False when "yes" was only the default."""
    head = str(text)
    if "." in head:
        head = head.split(".")[0]
    words = head.replace(",", "").split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no", True
    return "yes", any(w.lower().strip("!?;:") == "yes" for w in words)


def parse_yes_no_mme(text: str) -> str | None:
    """"yes" | "no" | None by MME's official rule."""
    answer = str(text).lower().strip().replace(".", "")
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return None


def _option_pattern(letters: str) -> dict[str, re.Pattern]:
    cls = f"[{re.escape(letters)}]"
    return {
        # "B", "B.", "(B)", "B)", "B:" alone
        "alone": re.compile(rf"^\(?({cls})[\.\):]?$"),
        # "B. text", "B) text", "(B) text", "B: text"
        "prefix": re.compile(rf"^\(?({cls})(?:[\.\):]\s|\)\s*)"),
        # "The answer is B." / "the answer is (B)"
        "sentence": re.compile(rf"answer is:?\s*\(?({cls})\b", re.IGNORECASE),
    }


def parse_option(text: str, letters: str | Sequence[str], options: Sequence[str] | None = None) -> str | None:
    """The chosen option letter from `letters` ("ABCD"), or None.

    `options`, the option texts in letter order, allow an answer that repeats exactly one option's
    text ("a red circle" for "B. A red circle") to count as that letter.
    """
    letters = "".join(letters)
    answer = str(text).strip()
    if not answer:
        return None
    patterns = _option_pattern(letters)
    for key in ("alone", "prefix", "sentence"):
        match = patterns[key].search(answer)
        if match:
            return match.group(1)
    if options:
        said = normalize_text(answer)
        hits = [letter for letter, option in zip(letters, options) if said and normalize_text(option) == said]
        if len(hits) == 1:
            return hits[0]
    return None


_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
_BOX = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUMBER] * 4) + r"\s*\]")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first "[x1, y1, x2, y2]" in the text as floats, or None when there is none."""
    match = _BOX.search(str(text))
    if match is None:
        return None
    return tuple(float(g) for g in match.groups())  # type: ignore[return-value]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes; a box with x2 <= x1 or y2 <= y1 has zero area."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0
