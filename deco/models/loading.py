"""Load a trained model from what a user points `ckpt=` at.

`load_model(ckpt)` returns a `LoadedModel` (model, tokenizer, image processor and the build
config) so that `deco.evaluate` and `deco.explain` never need the training config repeated.
Formats: a deco Lightning checkpoint (`*.ckpt`, which stores the model/projector configs in its
hyper-parameters; the tokenizer is rebuilt from them, or read from the run dir's `tokenizer/`).
Loading uses `torch.load(weights_only=True)`: a pickle that needs arbitrary code is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    image_processor: Any
    config: dict  # {"model": ..., "projector": ..., "stage": ...}

    @property
    def projector_tag(self) -> str:
        """Paper-style projector name, e.g. `avgpool2_144`, `qformer2_64`, `linear`."""
        projector = self.config["projector"]
        name = projector["name"]
        if "query_num" in projector:
            return f"{name}{projector.get('layer_num', 2)}_{projector['query_num']}"
        return name


def _run_dir_of(ckpt_path: Path) -> Path:
    # <run>/checkpoints/last.ckpt -> <run>
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def load_lightning_checkpoint(path: str | Path, map_location: str = "cpu") -> LoadedModel:
    from deco.data.image import load_image_processor
    from deco.data.tokenizer import load_tokenizer
    from deco.models.build import build_mllm

    path = Path(path)
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    build = hparams.get("build")
    if not build:
        raise ValueError(f"{path}: not a deco checkpoint (no 'build' config in its hyper_parameters)")
    model_cfg, stage = build["model"], hparams.get("stage") or {}
    run_dir = _run_dir_of(path)
    tokenizer_cfg = dict(model_cfg["tokenizer"])
    if tokenizer_cfg.get("name_or_path") is None and (run_dir / "tokenizer").is_dir():
        tokenizer_cfg["name_or_path"] = str(run_dir / "tokenizer")
    tokenizer = load_tokenizer(**tokenizer_cfg)
    image_processor = load_image_processor(**model_cfg["image_processor"])
    model = build_mllm(model_cfg, build["projector"], tokenizer)
    if (stage.get("lora") or {}).get("enabled"):
        from deco.models.stages import apply_stage  # LoRA weights need the adapter modules to exist

        apply_stage(model, stage)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedModel(model, tokenizer, image_processor, {**build, "stage": stage})


def load_model(ckpt: str | Path, map_location: str = "cpu") -> LoadedModel:
    """Detect the checkpoint format of `ckpt` and load it."""
    path = Path(ckpt).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"ckpt={ckpt}: no such file or directory")
    if path.is_file() and path.suffix == ".ckpt":
        return load_lightning_checkpoint(path, map_location)
    raise ValueError(f"ckpt={ckpt}: unrecognised checkpoint format (expected a deco .ckpt file)")
