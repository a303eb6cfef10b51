"""FLOPs and peak memory of a training step, for the performance benchmarks (experiments/perf).

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention; elementwise
ops are not counted), which also works on the `meta` device, so LLaVA-1.5-7B sized models are counted
without allocating them. Peak memory on CPU comes from `PeakMemory` below (parameters, gradients, optimizer
state, activations and temporaries, tracked per storage); on CUDA from `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from deco.models.attention import attention
from experiments.perf.common import train_step_fn


# ---------------------------------------------------------------------------------------------- FLOPs


def count_flops(fn: Callable[[], Any], model: torch.nn.Module | None = None) -> int:
    """FLOPs of everything `fn` runs (matmul-like ops; FlopCounterMode's definition: 2 per multiply-add).

    `model` runs with eager attention while counting: FlopCounterMode does not see the matmuls inside
    the CPU's fused SDPA kernel (the configs' default), so they would go uncounted.
    """
    with attention(model, "eager") if model is not None else contextlib.nullcontext():
        with FlopCounterMode(display=False) as counter:
            fn()
    return int(counter.get_total_flops())


def train_step_flops(model, batch: Mapping[str, torch.Tensor]) -> int:
    """FLOPs of one forward + backward of the MLLM on `batch` (the optimizer adds no matmuls)."""

    def fwd_bwd():
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        loss.backward()

    flops = count_flops(fwd_bwd, model)
    model.zero_grad(set_to_none=True)
    return flops


def parts_train_flops(model, batch_size: int, text_len: int, device: str | torch.device | None = None) -> int:
    """FLOPs of a forward + backward built from the parts, no data-dependent ops: runs on the `meta` device.

    vision (no grad when frozen) -> projector -> [visual tokens; text embeddings] -> LLM loss -> backward.
    The MLLM's placeholder scatter moves data but computes nothing, so on the same shapes this equals
    `train_step_flops` (the smoke test checks it); `text_len` counts text tokens without the placeholder.
    """
    param = next(model.parameters())
    device = param.device if device is None else torch.device(device)
    vision_cfg = model.vision.config
    size = vision_cfg.image_size
    pixels = torch.zeros(batch_size, 3, size, size, device=device, dtype=model.vision.dtype)
    ids = torch.zeros(batch_size, text_len, dtype=torch.long, device=device)

    def fwd_bwd():
        tokens = model.encode_images(pixels)  # b q d
        text = model.llm.get_input_embeddings()(ids)  # b t d
        embeds = torch.cat([tokens.to(text.dtype), text], dim=1)
        labels = torch.zeros(embeds.shape[:2], dtype=torch.long, device=device)
        out = model.llm(inputs_embeds=embeds, labels=labels)
        out.loss.backward()

    flops = count_flops(fwd_bwd, model)
    model.zero_grad(set_to_none=True)
    return flops


def llama_forward_flops(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                        batch: int, seq: int) -> int:
    """Hand count of a Llama forward (2 FLOPs per multiply-add; eager attention computes the full T x T).

    Per layer: q/o projections 2 * 2*b*T*d*d, k/v projections 2 * 2*b*T*d*d_kv, scores Q K^T and
    probabilities x V 2 * 2*b*T*T*d, gated MLP 3 * 2*b*T*d*I; plus the LM head 2*b*T*d*V.
    """
    d_kv = hidden // heads * kv_heads
    tokens = batch * seq
    per_layer = (2 * 2 * tokens * hidden * hidden + 2 * 2 * tokens * hidden * d_kv
                 + 2 * 2 * batch * seq * seq * hidden + 3 * 2 * tokens * hidden * intermediate)
    return layers * per_layer + 2 * tokens * hidden * vocab


# ---------------------------------------------------------------------------------------------- memory


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages while active (CPU or CUDA), counting what existed before as a base.

    Every op output's storage is recorded once with a weakref callback that subtracts it when freed, so the
    running total follows allocation and release as the allocator sees them (minus allocator rounding).
    `watch(tensors)` registers storages that exist already (parameters, optimizer state, the batch).
    """

    def __init__(self):
        super().__init__()
        self.live: dict[tuple, int] = {}
        self.refs: dict[tuple, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    @staticmethod
    def _key(storage) -> tuple:
        return (storage.device.type, storage.device.index, storage.data_ptr())

    def _add(self, tensor: torch.Tensor, persistent: bool) -> None:
        if tensor.device.type == "meta" or not tensor.untyped_storage().data_ptr():
            return
        storage = tensor.untyped_storage()
        key = self._key(storage)
        if key in self.live:
            return
        nbytes = storage.nbytes()
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        if not persistent:
            self.refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))

    def _free(self, key: tuple) -> None:
        self.current -= self.live.pop(key, 0)
        self.refs.pop(key, None)

    def watch(self, tensors) -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor, persistent=True)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor, persistent=False)
        return out


def peak_train_memory(model, batch: Mapping[str, torch.Tensor], optimizer) -> dict[str, int]:
    """Bytes of one training step: parameters+buffers, and the peak of everything live (the first step, so
    gradients and optimizer state are created inside it; later steps peak the same or lower).

    CUDA: torch.cuda.max_memory_allocated; CPU: `PeakMemory` (tensor storages, which is what the CPU
    allocator holds for torch).
    """
    step = train_step_fn(model, batch, optimizer)
    static = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return {"static_bytes": static, "peak_bytes": int(torch.cuda.max_memory_allocated())}
    tracker = PeakMemory()
    tracker.watch([*model.parameters(), *model.buffers(), *batch.values()])
    tracker.watch(t for state in optimizer.state.values() for t in state.values())
    with tracker:
        step()
    return {"static_bytes": static, "peak_bytes": int(tracker.peak)}
