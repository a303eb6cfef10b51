"""Which parameters train in each stage, and the optimizer groups that follow from it.

pretrain: projector only (LLaVA stage 1). finetune: projector + LLM (stage 2), the LLM either
fully or through LoRA adapters. The vision tower is frozen unless `train_vision` is set.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from deco.models.llm import apply_lora


def apply_stage(model: nn.Module, stage: Mapping) -> None:
    """Freeze / unfreeze the MLLM's parts in place (and wrap the LLM with LoRA when asked)."""
    lora = stage.get("lora") or {}
    if lora.get("enabled"):
        model.llm = apply_lora(
            model.llm,
            r=lora.get("r", 8),
            alpha=lora.get("alpha", 16),
            dropout=lora.get("dropout", 0.05),
            target_modules=lora.get("target_modules"),
        )  # peft freezes the base weights and leaves the adapters trainable
    else:
        model.llm.requires_grad_(bool(stage.get("train_llm")))
    model.vision.requires_grad_(bool(stage.get("train_vision")))
    model.projector.requires_grad_(True)


def parameter_groups(model: nn.Module, stage: Mapping) -> list[dict]:
    """One optimizer group per trainable part, each with its own learning rate."""
    lr = float(stage["lr"])
    projector_lr = float(stage.get("projector_lr") or lr)
    groups = []
    for name, part, part_lr in (
        ("projector", model.projector, projector_lr),
        ("llm", model.llm, lr),
        ("vision", model.vision, lr),
    ):
        params = [p for p in part.parameters() if p.requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": part_lr})
    return groups


def trainable_summary(model: nn.Module) -> dict[str, dict[str, int]]:
    """{part: {"trainable": n, "total": n}} for the log line each run starts with."""
    summary = {}
    for name in ("vision", "projector", "llm"):
        params = list(getattr(model, name).parameters())
        summary[name] = {
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params),
        }
    return summary
