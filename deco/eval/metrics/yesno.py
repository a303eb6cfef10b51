"""Yes/no benchmarks: POPE (LLaVA's eval_pope.py) and MME (MME's eval_tool/calculation.py).

* `YesNoMetrics` — POPE: accuracy, precision, recall, F1 (positive class "yes") and yes-ratio per split;
  their means over splits (the POPE number papers report is the mean F1).
* `MMEScore` — per subtask acc (% questions right) + acc+ (% images with both questions right), and the
  perception (10 subtasks, max 2000) and cognition (4 subtasks, max 800) sums.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from deco.eval.metrics.base import cat_state, check_lengths
from deco.eval.parsing import parse_yes_no_mme, parse_yes_no_pope


class YesNoMetrics(Metric):
    """POPE metrics per split; update(preds, labels, splits) with labels "yes"/"no".

    compute(): `<split>/accuracy|precision|recall|f1|yes_ratio` (percent) for every split with data,
    their means over splits (`f1` is the POPE number papers report), `n` and `unclear` (answers that
    never said yes or no; LLaVA's rule counts them as "yes").
    """

    full_state_update = False

    def __init__(self, splits: Sequence[str] = ("random", "popular", "adversarial"), **kwargs):
        super().__init__(**kwargs)
        if not splits:
            raise ValueError("YesNoMetrics needs at least one split name")
        self.splits = list(splits)
        # columns: tp, fp, tn, fn, unclear
        self.add_state("counts", default=torch.zeros(len(self.splits), 5, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], labels: Sequence[str], splits: Sequence[str] | None = None) -> None:
        splits = [self.splits[0]] * len(preds) if splits is None else splits
        check_lengths(preds, labels, splits)
        for pred, label, split in zip(preds, labels, splits):
            if split not in self.splits:
                raise ValueError(f"unknown split {split!r}; this metric has {self.splits}")
            label = str(label).strip().lower().rstrip(".")
            if label not in ("yes", "no"):
                raise ValueError(f"yes/no label must be 'yes' or 'no', got {label!r}")
            answer, explicit = parse_yes_no_pope(pred)
            row = self.splits.index(split)
            col = {("yes", "yes"): 0, ("yes", "no"): 1, ("no", "no"): 2, ("no", "yes"): 3}[(answer, label)]
            self.counts[row, col] += 1
            if answer == "yes" and not explicit:
                self.counts[row, 4] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        means = defaultdict(list)
        for row, split in enumerate(self.splits):
            tp, fp, tn, fn, _ = (self.counts[row, k].double() for k in range(5))
            n = tp + fp + tn + fn
            if n == 0:
                continue
            precision = tp / (tp + fp) if tp + fp > 0 else torch.tensor(0.0, dtype=torch.float64)
            recall = tp / (tp + fn) if tp + fn > 0 else torch.tensor(0.0, dtype=torch.float64)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else precision * 0
            values = {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
                      "yes_ratio": (tp + fp) / n}
            for key, value in values.items():
                out[f"{split}/{key}"] = 100.0 * value
                means[key].append(100.0 * value)
        for key, values in means.items():
            out[key] = torch.stack(values).mean()
        out["n"] = self.counts[:, :4].sum()
        out["unclear"] = self.counts[:, 4].sum()
        return out


MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MMEScore(Metric):
    """MME: update(preds, answers, categories, image_ids); every image has (usually) two yes/no questions.

    Per subtask: acc = % questions right, acc+ = % images with all their questions right, score = acc + acc+.
    `perception` / `cognition` sum the subtask scores of each group (max 2000 / 800).
    """

    full_state_update = False

    def __init__(self, categories: Sequence[str] = MME_PERCEPTION + MME_COGNITION, **kwargs):
        super().__init__(**kwargs)
        self.categories = list(categories)
        for name in ("category", "image", "correct", "parsed"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], answers: Sequence[str], categories: Sequence[str],
               image_ids: Sequence[int]) -> None:
        check_lengths(preds, answers, categories, image_ids)
        cats, correct, parsed = [], [], []
        for pred, answer, category in zip(preds, answers, categories):
            if category not in self.categories:
                raise ValueError(f"unknown MME category {category!r}; known: {self.categories}")
            label = parse_yes_no_mme(pred)
            cats.append(self.categories.index(category))
            parsed.append(label is not None)
            correct.append(label is not None and label == str(answer).strip().lower().rstrip("."))
        self.category.append(torch.tensor(cats, dtype=torch.long, device=self.device))
        self.image.append(torch.tensor([int(i) for i in image_ids], dtype=torch.long, device=self.device))
        self.correct.append(torch.tensor(correct, dtype=torch.long, device=self.device))
        self.parsed.append(torch.tensor(parsed, dtype=torch.long, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        states = (self.category, self.image, self.correct, self.parsed)
        category, image, correct, parsed = (cat_state(s) for s in states)
        out: dict[str, torch.Tensor] = {}
        groups = {"perception": 0.0, "cognition": 0.0}
        for index, name in enumerate(self.categories):
            sel = category == index
            if not bool(sel.any()):
                continue
            acc = 100.0 * correct[sel].double().mean()
            per_image: dict[int, bool] = {}
            for img, ok in zip(image[sel].tolist(), correct[sel].tolist()):
                per_image[img] = per_image.get(img, True) and bool(ok)
            acc_plus = 100.0 * sum(per_image.values()) / len(per_image)
            score = acc + acc_plus
            out[f"{name}/acc"], out[f"{name}/acc_plus"], out[f"{name}/score"] = acc, torch.tensor(acc_plus), score
            group = "cognition" if name in MME_COGNITION else "perception"
            groups[group] += float(score)
        out["perception"] = torch.tensor(groups["perception"], dtype=torch.float64)
        out["cognition"] = torch.tensor(groups["cognition"], dtype=torch.float64)
        out["total"] = out["perception"] + out["cognition"]
        out["n"] = torch.tensor(len(correct))
        out["unparsed"] = (1 - parsed).sum() if len(parsed) else torch.tensor(0)
        return out
