"""Shared pieces of the benchmark metrics: length checks, "cat" states, percentages, a counting base class.

Every metric takes the model's raw answer strings plus the references in `update`, keeps only sums or
per-question tensors as state (`dist_reduce_fx` "sum" or "cat", so scores reduce across DDP ranks), and
returns a dict of scalar tensors from `compute`: accuracies in percent, counts as counts. Answers a
parser cannot read count as wrong and are tallied under `unparsed`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def check_lengths(preds: Sequence, *others: Sequence) -> None:
    for other in others:
        if len(other) != len(preds):
            raise ValueError(f"got {len(preds)} predictions but {len(other)} references / labels")


def cat_state(state) -> torch.Tensor:
    """A "cat" list state as one long tensor (empty when nothing was added)."""
    if isinstance(state, list):
        return dim_zero_cat(state).long() if state else torch.zeros(0, dtype=torch.long)
    return state.long().flatten()


def pct(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return 100.0 * num.double() / den.double() if float(den) > 0 else torch.tensor(0.0, dtype=torch.float64)


class CountingMetric(Metric):
    """Base: a float score sum, a question count and an unparsed count."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("score", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0), dist_reduce_fx="sum")

    def _add(self, scores: list[float], unparsed: int = 0) -> None:
        self.score += float(sum(scores))
        self.total += len(scores)
        self.unparsed += unparsed

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": pct(self.score, self.total), "n": self.total.clone(), "unparsed": self.unparsed.clone()}
