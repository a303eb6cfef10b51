"""The memory plan of a composed `deco.train` config: which strategies fit, and the warning deco.train gives.

`plan_config(resolved)` takes the resolved config (a dict, as deco.train resolves it) and returns the
plan of the composed strategy next to the alternatives (DDP, FSDP full shard and, for a full finetune,
LLaVA's LoRA recipe under DDP), all for the same batch, sequence length, precision and device count.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from deco.models.stages import apply_stage
from deco.planning.activations import profile_training_forward
from deco.planning.arch import meta_mllm, part_config, to_fake
from deco.planning.memory import GIB, MemoryPlan, fits, parse_bytes, plan_memory

log = logging.getLogger(__name__)
DEFAULT_DEVICES = 8  # trainer.devices=-1 ("all GPUs") planned where no GPU is visible
LLAVA_LORA = {"enabled": True, "r": 128, "alpha": 256, "dropout": 0.05, "target_modules": None}


@dataclass
class PlanReport:
    """What `python -m deco.plan` prints: the setting, then one MemoryPlan per strategy."""

    setting: dict
    plans: dict[str, MemoryPlan] = field(default_factory=dict)
    composed: str = "ddp"
    gpu_memory: int = 80 * GIB
    reserve: float = 0.1
    notes: list[str] = field(default_factory=list)

    def fits(self, name: str) -> bool:
        return fits(self.plans[name], self.gpu_memory, self.reserve)


def composed_strategy(trainer: Mapping) -> tuple[str, bool]:
    """("single" | "ddp" | "fsdp", whether the strategy itself checkpoints activations) of a trainer config."""
    strategy = trainer.get("strategy")
    if isinstance(strategy, Mapping):
        if "fsdp" in str(strategy.get("_target_", "")).lower():
            return "fsdp", bool(strategy.get("activation_checkpointing"))
        return "ddp", False
    if strategy is None or strategy == "auto":
        return "single", False
    if "fsdp" in str(strategy):
        return "fsdp", False
    return "ddp", False


def plan_devices(cfg: Mapping, world_size: int | None = None) -> tuple[int, str | None]:
    """GPUs to plan for: plan.devices, else the run's world size / trainer.devices x num_nodes."""
    plan = cfg.get("plan") or {}
    if plan.get("devices"):
        return int(plan["devices"]), None
    if world_size:
        return int(world_size), None
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, int) and devices > 0:
        return devices * nodes, None
    visible = torch.cuda.device_count()
    if visible:
        return visible * nodes, None
    return DEFAULT_DEVICES * nodes, (f"trainer.devices={devices} means all GPUs; none is visible here, so the plan "
                                     f"assumes {DEFAULT_DEVICES} per node (set plan.devices=N)")


def plan_seq_len(cfg: Mapping, num_visual_tokens: int) -> int:
    """Positions per sample: plan.seq_len, else the longest a sample may be (data.max_length text tokens
    plus the visual tokens beyond their placeholder, capped by the tokenizer and the LLM)."""
    plan = cfg.get("plan") or {}
    if plan.get("seq_len"):
        return int(plan["seq_len"])
    model = cfg["model"]
    limits = [int(cfg["data"]["max_length"]) + num_visual_tokens - 1]
    tok_max = (model.get("tokenizer") or {}).get("model_max_length")
    if isinstance(tok_max, int):
        limits.append(tok_max)
    positions = part_config("model.llm", model["llm"]).get("max_position_embeddings")
    if positions:
        limits.append(int(positions))
    return min(limits)


def _autocast(precision: str) -> torch.dtype | None:
    if precision.endswith("-mixed"):
        return torch.float16 if precision.startswith("16") else torch.bfloat16
    return None


def _one(cfg: Mapping, stage: Mapping, strategy: str, devices: int, batch: int, seq_len: int | None,
         checkpointing: bool) -> tuple[MemoryPlan, int]:
    """Plan one strategy on a freshly built fake model (its activations profiled in the dtype it computes in)."""
    precision = str(cfg["trainer"].get("precision", "32-true"))
    low = torch.float16 if precision.startswith("16") else torch.bfloat16
    model = meta_mllm(cfg["model"], cfg["projector"])
    apply_stage(model, stage)
    if precision.endswith("-true") and "16" in precision:
        model.to(low)
    seq_len = seq_len or plan_seq_len(cfg, model.num_visual_tokens)
    mode = FakeTensorMode()
    computing = model
    if strategy == "fsdp" and "16" in precision:  # FSDP's mixed precision computes with bf16 (fp16) parameters
        computing = meta_mllm(cfg["model"], cfg["projector"])
        apply_stage(computing, stage)
        to_fake(computing, mode, low)
    else:
        to_fake(model, mode)
    profile = profile_training_forward(computing, batch, seq_len, autocast_dtype=_autocast(precision),
                                       fake_mode=mode)
    return plan_memory(model, strategy, devices, precision, profile, checkpointing), seq_len


def plan_config(cfg: Mapping, world_size: int | None = None, gpu_memory: int | None = None,
                alternatives: bool = True) -> PlanReport:
    """Plans of the composed run (resolved config dict) and, with `alternatives`, of the other strategies."""
    plan_cfg = cfg.get("plan") or {}
    devices, note = plan_devices(cfg, world_size)
    strategy, strategy_checkpoints = composed_strategy(cfg["trainer"])
    if strategy == "single" and devices > 1:
        strategy = "ddp"
    checkpointing = bool((cfg["model"] or {}).get("gradient_checkpointing")) or strategy_checkpoints
    stage = dict(cfg["stage"])
    batch = int(cfg["data"]["batch_size"])
    report = PlanReport(setting={}, composed=strategy,
                        gpu_memory=gpu_memory or parse_bytes(plan_cfg.get("gpu_memory", "80GB")),
                        reserve=float(plan_cfg.get("reserve", 0.1)), notes=[note] if note else [])
    seq_len = None
    names = [strategy] if strategy == "single" or not alternatives else ["ddp", "fsdp"]
    for name in names:
        report.plans[name], seq_len = _one(cfg, stage, name, devices, batch, seq_len, checkpointing)
    full_llm = stage.get("train_llm") and not (stage.get("lora") or {}).get("enabled")
    if full_llm and alternatives:
        lora_stage = {**stage, "lora": LLAVA_LORA, "train_llm": False}
        report.plans["lora+ddp"], _ = _one(cfg, lora_stage, "ddp" if devices > 1 else "single", devices, batch,
                                           seq_len, checkpointing)
    report.setting = {"model": cfg["model"].get("name"), "projector": cfg["projector"].get("name"),
                      "query_num": cfg.get("query_num"), "stage": stage.get("name"),
                      "lora": bool((stage.get("lora") or {}).get("enabled")),
                      "precision": cfg["trainer"].get("precision"), "devices": devices, "batch_size": batch,
                      "seq_len": seq_len, "checkpointing": checkpointing}
    return report


def warn_if_unfit(cfg: Mapping, world_size: int, gpu_memory: int) -> PlanReport | None:
    """deco.train on CUDA: log a warning naming what would fit when the composed run does not."""
    if not (cfg.get("plan") or {}).get("check", True):
        return None
    try:
        report = plan_config(cfg, world_size=world_size, gpu_memory=gpu_memory, alternatives=False)
        if report.fits(report.composed):
            return report
        report = plan_config(cfg, world_size=world_size, gpu_memory=gpu_memory)
    except Exception as error:  # planning must never stop a run that might well fit
        log.info("memory plan unavailable (%s: %s)", type(error).__name__, error)
        return None
    plan = report.plans[report.composed]
    others = [name for name in report.plans if name != report.composed and report.fits(name)]
    log.warning(
        "memory plan: this run needs about %.1f GiB per GPU (%s on %d device(s), batch %d x %d positions), "
        "more than %.0f%% of the GPU's %.1f GiB; %s. Details: python -m deco.plan <the same overrides>",
        plan.total / GIB, report.composed, report.setting["devices"], report.setting["batch_size"],
        report.setting["seq_len"], 100 * (1 - report.reserve), gpu_memory / GIB,
        f"it would fit with {', '.join(others)}" if others else
        "lower data.batch_size (data.global_batch_size keeps the effective batch) or turn on "
        "model.gradient_checkpointing")
    return report
