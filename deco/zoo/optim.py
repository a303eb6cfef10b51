"""The zoo's optimisation step, shared by its two pretraining loops: AdamW, warmup + cosine, clipping at 1."""

from __future__ import annotations

import math

import torch
from transformers import get_cosine_schedule_with_warmup


def adamw_cosine(params: list, lr: float, steps: int, warmup_ratio: float):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return opt, get_cosine_schedule_with_warmup(opt, math.ceil(steps * warmup_ratio), steps)


def optimizer_step(loss: torch.Tensor, params: list, opt, sched) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
