"""RefCOCO-style grounding: Acc@IoU>=0.5 and mean IoU of the first printed "[x1, y1, x2, y2]".

lmms-eval's refcoco utils_rec.py reads the box with its regex and scores an unreadable answer as the box
[0, 0, 0, 0] (IoU 0); here it also counts as `unparsed`. IoU >= threshold is a hit (0.5 exactly counts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from deco.eval.metrics.base import check_lengths, pct
from deco.eval.parsing import BOX_RULES, box_iou, parse_box


class GroundingAccuracy(Metric):
    """Acc@IoU>=threshold for "[x1, y1, x2, y2]" answers; update(preds, boxes) with boxes in the answer's frame."""

    full_state_update = False

    def __init__(self, iou_threshold: float = 0.5, rule: str = "reference", **kwargs):
        super().__init__(**kwargs)
        if rule not in BOX_RULES:
            raise ValueError(f"unknown box parser {rule!r}; allowed: {', '.join(BOX_RULES)}")
        self.iou_threshold, self.rule = iou_threshold, rule
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], boxes: Sequence[Sequence[float]]) -> None:
        check_lengths(preds, boxes)
        for pred, box in zip(preds, boxes):
            if len(box) != 4:
                raise ValueError(f"reference box must have 4 numbers (x1, y1, x2, y2), got {box!r}")
            guess = parse_box(pred, self.rule)
            self.total += 1
            if guess is None:
                self.unparsed += 1
                continue
            iou = box_iou(guess, box)
            self.iou_sum += iou
            self.hits += int(iou >= self.iou_threshold)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": pct(self.hits, self.total), "mean_iou": pct(self.iou_sum, self.total),
                "n": self.total.clone(), "unparsed": self.unparsed.clone()}
