"""Open short answers: soft VQA accuracy (VQAv2, TextVQA, VizWiz) and exact match (GQA, shapes attributes).

`vqa_accuracy(rule=...)` follows one reference chain exactly:

* "vqav2" (VQAv2, VizWiz): LLaVA cleans each prediction with m4c's EvalAIAnswerProcessor before
  submission (convert_vqav2_for_submission.py / convert_vizwiz_for_submission.py); the server's
  vqaEval.py then strips both sides and, only when the human answers are not all the same, runs its
  punctuation and digit/article steps on both. Score: mean over the 10 leave-one-out subsets of
  min(#matches / 3, 1).
* "textvqa": m4c's TextVQAAccuracyEvaluator — every answer through EvalAIAnswerProcessor, same
  leave-one-out score.

With a single reference (not a VQA layout; both references would score 0) the answer is an exact match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deco.eval.metrics.base import CountingMetric, check_lengths
from deco.eval.normalize import m4c_answer, normalize_gqa, normalize_vqa

VQA_RULES = ("vqav2", "textvqa")


def _leave_one_out(pred: str, gts: Sequence[str]) -> float:
    scores = []
    for i in range(len(gts)):
        others = list(gts[:i]) + list(gts[i + 1:])
        scores.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(scores) / len(scores)


def vqa_accuracy(prediction: str, answers: Sequence[str], rule: str = "vqav2") -> float:
    """Official VQA accuracy of one answer against the human answers (fraction in [0, 1])."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    if rule == "textvqa":
        pred, gts = m4c_answer(prediction), [m4c_answer(a) for a in answers]
    elif rule == "vqav2":
        pred = m4c_answer(prediction).replace("\n", " ").replace("\t", " ").strip()
        gts = [str(a).replace("\n", " ").replace("\t", " ").strip() for a in answers]
        if len(set(gts)) > 1:
            pred, gts = normalize_vqa(pred), [normalize_vqa(g) for g in gts]
    else:
        raise ValueError(f"unknown VQA rule {rule!r}; allowed: {', '.join(VQA_RULES)}")
    if len(gts) == 1:
        return float(pred == gts[0])
    return _leave_one_out(pred, gts)


class VQAAccuracy(CountingMetric):
    """Soft VQA accuracy; update(preds, answers) with answers a list of lists."""

    def __init__(self, rule: str = "vqav2", **kwargs):
        super().__init__(**kwargs)
        if rule not in VQA_RULES:
            raise ValueError(f"unknown VQA rule {rule!r}; allowed: {', '.join(VQA_RULES)}")
        self.rule = rule

    def update(self, preds: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
        check_lengths(preds, answers)
        self._add([vqa_accuracy(p, a, self.rule) for p, a in zip(preds, answers)])


class ExactMatch(CountingMetric):
    """Exact match after a normalisation of the answer (default: LLaVA's GQA rule).

    `normalize_reference`: also normalise the reference (shapes answers such as "Red."); GQA's eval.py
    compares with the annotation's answer as it is.
    """

    def __init__(self, normalize: Callable[[str], str] = normalize_gqa, normalize_reference: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.normalize, self.normalize_reference = normalize, normalize_reference

    def update(self, preds: Sequence[str], answers: Sequence[str]) -> None:
        check_lengths(preds, answers)
        refs = [self.normalize(a) if self.normalize_reference else str(a) for a in answers]
        self._add([float(self.normalize(p) == r) for p, r in zip(preds, refs)])
