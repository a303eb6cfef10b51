"""What a run prints is what a user needs: library noise that says nothing about this run is left out.

- `quiet_weight_loading()`: transformers' `Loading weights` bar (one per tower / LLM load; deco's weights load in
  well under a second) is off while deco loads a model.
- `quiet_lightning()`: Lightning's advertising tips (litlogger / litmodels), the line about where validation
  runs, the note about estimating the step count, the TPU line, and two warnings that do not apply here: the
  `LeafSpec` deprecation inside Lightning itself, and "Found N module(s) in eval mode" (the frozen vision tower is
  in eval mode on purpose: no dropout, no normalisation statistics to update; deco's own parameter lines say so),
  and "Checkpoint directory ... exists and is not empty" (a resumed run writes into its own run dir on purpose;
  deco.lit.resume refuses one that would continue another model).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

LIGHTNING_NOISE = (
    "💡 Tip:",
    "TPU available:",
    "`Trainer(val_check_interval=1.0)` was configured",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated", r"Found \d+ module\(s\) in eval mode",
            r"Checkpoint directory .* exists and is not empty")  # resume=auto continues in its own run dir


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(LIGHTNING_NOISE)


def quiet_lightning() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in target.filters):
            target.addFilter(_DropNoise())
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def quiet_weight_loading():
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
