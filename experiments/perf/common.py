"""Shared pieces of the performance benchmarks: models at named sizes, batches, interleaved timing, FLOPs, memory.

Every figure in `experiments/perf` is a *ratio* of two measurements taken in the same process, interleaved
(A, B, A, B, ... with the order flipped every round) and summarised by medians, because the benchmark machine
is small and shared: absolute times drift with whatever else runs, ratios of interleaved medians much less.
FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention; elementwise
ops are not counted), which also works on the `meta` device, so LLaVA-1.5-7B sized models are counted
without allocating them. Peak memory on CPU comes from `torch.distributed._tools.mem_tracker.MemTracker`
(parameters, gradients, optimizer state, activations and temporaries, tracked per storage); on CUDA from
`torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from deco.models.attention import attention
from deco.models.build import build_mllm
from deco.models.stages import apply_stage, parameter_groups

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# Model sizes by name. "tiny" is configs/model/tiny_scratch.yaml itself (the tiny architecture, random init: a
# benchmark needs no trained weights); "wide" is the widest that trains a step in ~1 s on 2 CPU cores; "smoke"
# shrinks the patch grid to 4x4 (56 px / 14) so tests run in a second.
WIDE_OVERRIDES = {
    "vision": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4},
    "llm": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 8},
}
SMOKE_OVERRIDES = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 56},
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2},
}
SIZES = ("smoke", "tiny", "wide")


def projector_configs(size: str) -> dict[str, dict[str, Any]]:
    """{label: projector config} for the three projectors the figures compare: the paper's settings
    (576 patches -> linear 576, avgpool 144, qformer 144 tokens); smoke: 16 patches -> 16 / 4 / 4."""
    q = 4 if size == "smoke" else 144
    n = 16 if size == "smoke" else 576
    return {
        f"linear_{n}": {"name": "linear"},
        f"avgpool_{q}": {"name": "avgpool", "query_num": q, "mlp_depth": 2, "pooling": "avg"},
        f"qformer_{q}": {"name": "qformer", "query_num": q, "layer_num": 2},
    }


def model_config(size: str) -> dict[str, Any]:
    """The tiny model config (configs/model/tiny_scratch.yaml) with the size's widths applied."""
    if size not in SIZES:
        raise ValueError(f"size='{size}' is unknown; choose one of: {', '.join(SIZES)}")
    # tiny_scratch: the tiny architecture from configs (model=tiny now loads the pretrained zoo, which has no
    # `config` sections to widen); step times and FLOPs do not depend on the weights
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "tiny_scratch.yaml"), resolve=True)
    overrides = {"wide": WIDE_OVERRIDES, "smoke": SMOKE_OVERRIDES}.get(size, {})
    for part, values in overrides.items():
        cfg[part]["config"].update(values)
    cfg["image_processor"]["image_size"] = cfg["vision"]["config"]["image_size"]
    return cfg


class Bench:
    """Tokenizer, image processor and model builder for one size (the tokenizer is trained once)."""

    def __init__(self, size: str, stage: Mapping | None = None):
        from deco.data.image import load_image_processor
        from deco.data.tokenizer import load_tokenizer

        self.size = size
        self.model_cfg = model_config(size)
        self.tokenizer = load_tokenizer(**self.model_cfg["tokenizer"])
        self.image_processor = load_image_processor(**self.model_cfg["image_processor"])
        self.stage = dict(stage or load_stage("finetune"))

    @property
    def image_size(self) -> int:
        return int(self.model_cfg["vision"]["config"]["image_size"])

    def model(self, projector_cfg: Mapping, seed: int = 0, stage: bool = True):
        """A fresh MLLM (same seed -> same weights) with the stage's freezing applied."""
        torch.manual_seed(seed)
        model = build_mllm(self.model_cfg, dict(projector_cfg), self.tokenizer)
        if stage:
            apply_stage(model, self.stage)
        return model

    def samples(self, n: int, template: str = "vicuna_v1", max_length: int = 128, seed: int = 0) -> list[dict]:
        from deco.data.shapes import ShapesDataset

        ds = ShapesDataset(n, seed, tokenizer=self.tokenizer, image_processor=self.image_processor,
                           template=template, max_length=max_length, image_size=self.image_size)
        return [ds[i] for i in range(n)]

    def train_batch(self, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """A right-padded training batch of shapes-world conversations (tensors only)."""
        from deco.data.collate import Collator

        batch = Collator(self.tokenizer.pad_token_id, "right")(self.samples(batch_size, seed=seed))
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def load_stage(name: str) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / "stage" / f"{name}.yaml"), resolve=True)


def make_optimizer(model: torch.nn.Module, stage: Mapping, total_steps: int = 1000):
    """AdamW over the stage's parameter groups + cosine schedule with warmup, exactly as MLLMModule builds them."""
    import math

    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameter_groups(model, stage), weight_decay=float(stage.get("weight_decay", 0.0)))
    warmup = math.ceil(total_steps * float(stage.get("warmup_ratio", 0.0)))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def train_step_fn(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], optimizer,
                  clip: float | None = None) -> Callable[[], float]:
    """One plain PyTorch training step (forward, backward, optional clipping, AdamW step, zero_grad)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step() -> float:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


# ---------------------------------------------------------------------------------------------- timing


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured round-robin (order reversed every other round).

    cpu_times: a dict to fill with this process's CPU seconds per call as well (`time.process_time`): with one
    thread on a shared CPU it leaves out the time other jobs held the core, so its ratios drift less.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(time.process_time() - cpu)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i] / den[i]: each pair ran back to back, so slow spells cancel."""
    if len(num) != len(den) or not num:
        raise ValueError(f"paired_ratio needs equal, non-empty lists, got {len(num)} and {len(den)}")
    return statistics.median(a / b for a, b in zip(num, den))


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


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
