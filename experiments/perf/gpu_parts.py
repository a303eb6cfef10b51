"""`gpu.py`'s second and third parts: Lightning steps under trainer=gpu / trainer=fsdp, and generation throughput.

Lightning: a few `MLLMModule` steps under the repo's trainer configs.

The trainer is composed from configs/train.yaml exactly as `python -m deco.train trainer=<name>` would, then
shortened: `max_steps`, no logger, no checkpoints, no progress bar, no validation. The model is handed in
(LLaVA-1.5-7B dimensions from gpu.py, random init) and trained on identical random batches; a callback
times every step with the device synchronised, the first two are warm-up. FSDP runs on however many GPUs the
machine has (one here), which shows what sharding and activation checkpointing cost on top of `trainer=gpu`.
Precision: `bf16-true` by default (bf16 weights and AdamW state, as the bare loop in gpu.py); `bf16-mixed`
(the config's) keeps fp32 master weights, 16 bytes per parameter = 112 GB for 7B before any activation.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from experiments.perf.common import load_stage, sync
from experiments.perf.gpu import _grid, _is_oom, build_model, make_batch, projector_settings
from experiments.perf.overhead import NO_VALIDATION


class StepTimer(L.Callback):
    """Seconds between consecutive `on_train_batch_start` calls (one whole step each), device synchronised."""

    def __init__(self):
        self.marks: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync()
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        sync()
        self.marks.append(time.perf_counter())

    @property
    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def compose_trainer(trainer: str, output_dir: Path, steps: int, precision: str | None):
    from experiments.perf.overhead import compose_train_config

    overrides = [f"trainer={trainer}", f"trainer.max_steps={steps}", "logger=none",
                 "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
                 "++trainer.enable_model_summary=false", "trainer.limit_val_batches=0"]
    if precision:
        overrides.append(f"trainer.precision={precision}")
    return compose_train_config(output_dir, overrides).trainer


def lightning_steps(model, batch: dict[str, torch.Tensor], trainer: str = "gpu", steps: int = 6,
                    precision: str | None = "bf16-true", fit: bool = True) -> dict:
    """Median step time of `steps - 2` timed `MLLMModule` steps under `configs/trainer/<trainer>.yaml`.

    fit=False only composes and instantiates the trainer's strategy (what a CPU-only test can check of FSDP).
    """
    from hydra.utils import instantiate

    from deco.lit.module import MLLMModule

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_trainer(trainer, Path(tmp), steps, precision)
        if not fit:
            strategy = cfg.get("strategy")
            made = instantiate(strategy) if strategy is not None and not isinstance(strategy, str) else strategy
            return {"trainer": trainer, "strategy": type(made).__name__ if made is not None else None,
                    "precision": cfg.precision, "fitted": False}
        timer = StepTimer()
        module = MLLMModule(model, load_stage("finetune"), build_config={})
        trainer_obj: L.Trainer = instantiate(cfg, callbacks=[timer], logger=False)
        loader = DataLoader([batch] * steps, batch_size=None, shuffle=False)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NO_VALIDATION[0])  # limit_val_batches=0: by design
            trainer_obj.fit(module, train_dataloaders=loader)
        timed = timer.steps[2:] or timer.steps
    step_s = statistics.median(timed)
    b = batch["input_ids"].shape[0]
    return {
        "trainer": trainer,
        "strategy": type(trainer_obj.strategy).__name__,
        "precision": str(trainer_obj.precision),
        "fitted": True,
        "steps_timed": len(timed),
        "step_s": step_s,
        "samples_per_s": b / step_s,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
    }


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_lightning(dims: dict, device, smoke: bool, batch_size: int, text_len: int, steps: int) -> dict:
    """avgpool-144 (DeCo) under trainer=gpu and trainer=fsdp (smoke: trainer=cpu fitted, fsdp composed only)."""
    label, cfg = [(k, v) for k, v in projector_settings(_grid(dims) ** 2).items() if k.startswith("avgpool")][0]
    dtype = torch.float32 if smoke else torch.bfloat16
    out = {"projector": label, "batch_size": batch_size}
    for trainer in (("cpu", "fsdp") if smoke else ("gpu", "fsdp")):
        fit = not (smoke and trainer == "fsdp")
        try:
            model = build_model(dims, cfg, device=device, dtype=dtype) if fit else None
            batch = make_batch(dims, batch_size, text_len, "cpu", dtype)
            row = lightning_steps(model, batch, trainer, steps=steps, precision=None if smoke else "bf16-true",
                                  fit=fit)
            if fit:
                seq = text_len - 1 + model.num_visual_tokens
                row["tokens_per_s"] = row["samples_per_s"] * seq
        except Exception as error:  # noqa: BLE001 - record it; the other trainer and the generation still run
            if not _is_oom(error) and smoke:
                raise
            row = {"trainer": trainer, "error": f"{type(error).__name__}: {str(error)[:300]}"}
        out[trainer] = row
        model = None
        _free()
    return out


def run_generation(dims: dict, device, smoke: bool) -> dict:
    """Batched greedy generation throughput, avgpool-144 and linear-576: now vs the previous path."""
    from experiments.perf.generation import throughput

    batch, prompt, new = (2, 8, 3) if smoke else (16, 64, 32)
    dtype = torch.float32 if smoke else torch.bfloat16
    out = {}
    for label, cfg in projector_settings(_grid(dims) ** 2).items():
        if label.startswith("qformer"):
            continue  # same LLM work as avgpool (144 tokens)
        model = build_model(dims, cfg, device=device, dtype=dtype).eval()
        out[label] = throughput(model, batch, prompt, new, repeats=2 if smoke else 3)
        model = None
        _free()
    return out
