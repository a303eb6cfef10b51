"""Shared pieces of the performance benchmarks: models at named sizes, batches, interleaved timing (FLOPs and
peak memory: experiments.perf.counting).

Every figure in `experiments/perf` is a *ratio* of two measurements taken in the same process, interleaved
(A, B, A, B, ... with the order flipped every round) and summarised by medians, because the benchmark machine
is small and shared: absolute times drift with whatever else runs, ratios of interleaved medians much less.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

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
