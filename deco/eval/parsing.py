"""Turning free-form model answers into the labels a scorer compares: yes/no, an option letter, a box.

Each parser follows the rule of the scorer LLaVA-1.5 reports with, and returns None when the
answer cannot be read (the metric then counts it as wrong and tallies it as unparsed):

* `parse_yes_no_pope`: llava/eval/eval_pope.py — keep the text before the first period, drop
  commas, answer "no" if a word is "No", "no" or "not", else "yes" (never None; the second
  return value says whether the answer said "yes" explicitly or only defaulted to it).
* `parse_yes_no_mme`: MME's eval_tool/calculation.py — the lower-cased answer "yes"/"no" exactly,
  else whichever of the two appears in its first four characters, else None ("other").
* `parse_option(rule=...)`: "reference" is llava/eval/eval_science_qa.py (an exact letter, "B. ..."
  or exactly one match of `The answer is ([A-Z]).`); "exact" is LLaVA's SEED-Bench rule (the answer
  equals the letter); "lenient" is deco's extension ("(B)", "B)", lower-case "the answer is b",
  a unique match of an option's text).
* `parse_box(rule=...)`: "reference" is lmms-eval's refcoco utils_rec.py regex (the first
  "[x1, y1, x2, y2]" of plain decimals, no space before a comma); "lenient" also takes ".5",
  exponents and spaces around commas.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deco.eval.normalize import normalize_text

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
    answer = str(text).lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return None


OPTION_RULES = ("reference", "exact", "lenient")
_SQA_SENTENCE = re.compile(r"The answer is ([A-Z]).")


def _option_reference(answer: str, letters: str) -> str | None:
    """eval_science_qa.py: its option list is A-E whatever the question, a letter is kept only if it
    names one of this question's choices."""
    options = list(LETTERS[: max(5, len(letters))])
    if answer in options:
        choice = answer
    elif len(answer) >= 3 and answer[0] in options and answer[1:3] == ". ":
        choice = answer[0]
    else:
        found = _SQA_SENTENCE.findall(answer)
        choice = found[0] if len(found) == 1 else None
    return choice if choice is not None and choice in list(letters) else None


def _option_pattern(letters: str) -> dict[str, re.Pattern]:
    cls = f"[{re.escape(letters)}]"
    return {
        # "B", "B.", "(B)", "B)", "B:" alone
        "alone": re.compile(rf"^\(?({cls})[\.\):]?$"),
        # "B. text", "B) text", "(B) text", "B: text"
        "prefix": re.compile(rf"^\(?({cls})(?:[\.\):]\s|\)\s*)"),
        # "The answer is B." / "the answer is (B)"
        "sentence": re.compile(rf"(?i:answer is):?\s*\(?({cls})\b"),  # the letter itself stays upper case
    }


def _option_lenient(answer: str, letters: str, options: Sequence[str] | None) -> str | None:
    patterns = _option_pattern(letters)
    for name in ("alone", "prefix", "sentence"):
        match = patterns[name].search(answer)
        if match:
            return match.group(1)
    if options:
        said = normalize_text(answer)
        hits = [letter for letter, option in zip(letters, options) if said and normalize_text(option) == said]
        if len(hits) == 1:
            return hits[0]
    return None


def parse_option(text: str, letters: str | Sequence[str], options: Sequence[str] | None = None,
                 rule: str = "reference") -> str | None:
    """The chosen option letter from `letters` ("ABCD"), or None.

    rule "lenient" also reads an answer that repeats exactly one option's text (`options`, the option
    texts in letter order: "a red circle" for "B. A red circle") as that letter.
    """
    letters = "".join(letters)
    answer = str(text)  # the reference rules take the answer as given (the runner hands it over stripped)
    if rule == "reference":
        return _option_reference(answer, letters)
    if rule == "exact":
        return answer if answer in list(letters) else None
    if rule == "lenient":
        answer = answer.strip()
        return _option_lenient(answer, letters, options) if answer else None
    raise ValueError(f"unknown option parser {rule!r}; allowed: {', '.join(OPTION_RULES)}")


BOX_RULES = ("reference", "lenient")
_REF_FLOAT = r"(-?\d+(?:\.\d+)?)"
_BOX_REFERENCE = re.compile(r"\[\s*" + r",\s*".join([_REF_FLOAT] * 4) + r"\s*\]")
_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
_BOX_LENIENT = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUMBER] * 4) + r"\s*\]")


def parse_box(text: str, rule: str = "reference") -> tuple[float, float, float, float] | None:
    """The first "[x1, y1, x2, y2]" in the text as floats, or None when there is none."""
    if rule not in BOX_RULES:
        raise ValueError(f"unknown box parser {rule!r}; allowed: {', '.join(BOX_RULES)}")
    match = (_BOX_REFERENCE if rule == "reference" else _BOX_LENIENT).search(str(text))
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
