"""Where a step's time goes, split by what FlopCounterMode counts and what it does not (figure 2's profile).

`profile_step(step)` runs `step` under torch.profiler and sums each op's *self* CPU time into categories:
`counted` (the ops FlopCounterMode gives FLOPs: matmuls, convolutions, attention kernels) and the real work it
gives none: `dropout` (the random mask: `bernoulli_`), `softmax`, `layer_norm`, `optimizer` (AdamW's foreach
kernels), and `other` (elementwise ops, copies, indexing, autograd bookkeeping). A GPU step is profiled the
same way with CUDA time. The profiler adds a few microseconds per op, mostly to `other`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# op-name prefixes per category, first match wins ("aten::_softmax" also matches its backward)
CATEGORIES = (
    ("counted", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mkldnn_convolution",
                 "aten::convolution_backward", "aten::_scaled_dot_product", "aten::_flash_attention",
                 "aten::_efficient_attention")),
    ("dropout", ("aten::bernoulli", "aten::native_dropout")),
    ("softmax", ("aten::_softmax", "aten::_log_softmax", "aten::_safe_softmax")),
    ("layer_norm", ("aten::native_layer_norm",)),
    ("optimizer", ("aten::_foreach_", "aten::_fused_adam")),
)
NAMES = tuple(name for name, _ in CATEGORIES) + ("other",)


def op_category(op: str) -> str:
    for name, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return name
    return "other"


def profile_step(step: Callable[[], object], steps: int = 2) -> dict[str, float]:
    """Seconds per step spent in each category (self time of every op, summed), plus `total`."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    seconds = dict.fromkeys(NAMES, 0.0)
    for event in prof.key_averages():
        if event.key.startswith(("ProfilerStep", "Optimizer.", "autograd::")) or "Backward" in event.key:
            continue  # ranges and autograd nodes: their ops are counted on their own
        self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        seconds[op_category(event.key)] += self_us * 1e-6 / steps
    seconds["total"] = sum(seconds[name] for name in NAMES)
    return seconds
