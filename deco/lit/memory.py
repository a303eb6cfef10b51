"""What deco.train does about memory at start: gradient checkpointing, and the memory plan's warning.

`model.gradient_checkpointing=true` turns on transformers' checkpointing in the tower and the LLM
(deco.models.recompute) under any strategy, except where the strategy already checkpoints the same
layers (trainer=fsdp with `activation_checkpointing`): recomputing twice would only cost time. On CUDA,
rank 0 plans the composed run (deco.planning) against the GPU's memory and warns when it does not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)


def strategy_checkpoints(trainer) -> bool:
    """Whether the trainer's strategy wraps layers in activation checkpointing itself (Lightning FSDP)."""
    return bool(getattr(getattr(trainer, "strategy", None), "_activation_checkpointing_kwargs", None))


def setup_gradient_checkpointing(model: nn.Module, trainer, enabled: bool) -> bool:
    """Enable transformers' gradient checkpointing on `model` when asked; returns whether it did."""
    if not enabled:
        return False
    if strategy_checkpoints(trainer):
        log.info("model.gradient_checkpointing: the FSDP strategy checkpoints the decoder / ViT layers itself "
                 "(trainer.strategy.activation_checkpointing)")
        return False
    from deco.models.recompute import enable_gradient_checkpointing

    parts = enable_gradient_checkpointing(model)
    log.info("gradient checkpointing on in %s", ", ".join(parts))
    return True


def warn_if_plan_unfit(resolved: Mapping, trainer) -> None:
    """On CUDA, rank 0: warn (deco.planning.run.warn_if_unfit) when the plan exceeds this GPU's memory."""
    accelerator = type(getattr(trainer, "accelerator", None)).__name__
    if "CUDA" not in accelerator or not torch.cuda.is_available() or not trainer.is_global_zero:
        return
    from deco.planning.run import warn_if_unfit

    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    warn_if_unfit(resolved, world_size=trainer.world_size, gpu_memory=total)
