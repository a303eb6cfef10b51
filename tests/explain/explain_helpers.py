"""Shared, cached objects for the explain tests: tiny models per projector and one trained run.

Cached at module level (not session fixtures) so every test file reuses the same objects once built.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from conftest import TINY_RUN, compose_config
from omegaconf import OmegaConf

from deco.data.shapes import render_scene

_MODELS: dict[str, tuple] = {}
_RUN: dict[str, Path] = {}


def tiny_model(projector: str, query_num: int = 16):
    """(model, tokenizer, image_processor) of the tiny default with `projector`, random init (seed 0), eval mode."""
    key = f"{projector}-{query_num}"
    if key not in _MODELS:
        from deco.data.image import load_image_processor
        from deco.data.tokenizer import load_tokenizer
        from deco.models.build import build_mllm

        cfg = compose_config("train", [f"projector={projector}", f"query_num={query_num}"], Path(tempfile.mkdtemp()))
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        tokenizer = load_tokenizer(**model_cfg["tokenizer"])
        torch.manual_seed(0)
        model = build_mllm(model_cfg, OmegaConf.to_container(cfg.projector, resolve=True), tokenizer).eval()
        _MODELS[key] = (model, tokenizer, load_image_processor(**model_cfg["image_processor"]))
    return _MODELS[key]


def trained_run() -> Path:
    """Run dir of a 3-step avgpool (q=16) training with the relevance callback and W&B offline."""
    if "dir" not in _RUN:
        from deco.train import train

        out = Path(tempfile.mkdtemp(prefix="deco-explain-run-"))
        previous = os.environ.get("WANDB_MODE")
        os.environ["WANDB_MODE"] = "offline"
        try:
            cfg = compose_config(
                "train",
                [
                    *TINY_RUN,
                    "projector=avgpool",
                    "query_num=16",
                    "logger=wandb",
                    "logger.wandb.group=null",
                    "callbacks=[default,relevance]",
                    "callbacks.relevance.every_n_steps=2",
                    "callbacks.relevance.num_probes=2",
                    "callbacks.relevance.methods=[rgae,attnlrp]",
                ],
                out,
            )
            train(cfg)
        finally:
            if previous is None:
                os.environ.pop("WANDB_MODE", None)
            else:
                os.environ["WANDB_MODE"] = previous
        _RUN["dir"] = out
    return _RUN["dir"]


def scene_image(tmp_path: Path) -> Path:
    """A shapes-world scene (one green triangle, lower left) saved as PNG."""
    path = tmp_path / "scene.png"
    render_scene(1000, 3).image.save(path)
    return path
