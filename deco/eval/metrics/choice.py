"""Multiple-choice accuracy (MMBench, SEED-Bench, ScienceQA), with MMBench's circular rule.

The option letter is read by `deco.eval.parsing.parse_option` with the benchmark's rule: "reference"
(LLaVA's eval_science_qa.py), "exact" (LLaVA's SEED-Bench rule) or "lenient" (deco's extension).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from deco.eval.metrics.base import cat_state, check_lengths, pct
from deco.eval.parsing import OPTION_RULES, parse_option


class MultipleChoiceAccuracy(Metric):
    """Option-letter accuracy; update(preds, answers, options, question_ids=None).

    answers: the right letters; options: per question the option texts in letter order (A, B, ...).
    With `circular=True` (MMBench), rows sharing a question id are the rotations of one question: it is
    right only when all of them are. compute(): `accuracy` (per row), `circular_accuracy` when circular,
    `n`, `unparsed`.
    """

    full_state_update = False

    def __init__(self, circular: bool = False, rule: str = "reference", **kwargs):
        super().__init__(**kwargs)
        if rule not in OPTION_RULES:
            raise ValueError(f"unknown option parser {rule!r}; allowed: {', '.join(OPTION_RULES)}")
        self.circular, self.rule = circular, rule
        for name in ("question", "correct", "parsed"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], answers: Sequence[str], options: Sequence[Sequence[str]],
               question_ids: Sequence[int] | None = None) -> None:
        question_ids = list(range(len(preds))) if question_ids is None else question_ids
        check_lengths(preds, answers, options, question_ids)
        correct, parsed = [], []
        for pred, answer, opts in zip(preds, answers, options):
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(opts)]
            if answer not in letters:
                raise ValueError(f"answer {answer!r} is not one of the option letters {letters!r}")
            choice = parse_option(pred, letters, opts, self.rule)
            parsed.append(choice is not None)
            correct.append(choice == answer)
        self.question.append(torch.tensor([int(q) for q in question_ids], dtype=torch.long, device=self.device))
        self.correct.append(torch.tensor(correct, dtype=torch.long, device=self.device))
        self.parsed.append(torch.tensor(parsed, dtype=torch.long, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        question, correct, parsed = (cat_state(s) for s in (self.question, self.correct, self.parsed))
        n = torch.tensor(len(correct))
        out = {"accuracy": pct(correct.sum(), n), "n": n, "unparsed": (1 - parsed).sum()}
        if self.circular:
            per_question: dict[int, bool] = {}
            for q, ok in zip(question.tolist(), correct.tolist()):
                per_question[q] = per_question.get(q, True) and bool(ok)
            out["circular_accuracy"] = pct(torch.tensor(sum(per_question.values())), torch.tensor(len(per_question)))
            out["questions"] = torch.tensor(len(per_question))
        return out
