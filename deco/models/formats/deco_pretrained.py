"""deco's own `save_pretrained` directory: one safetensors file, a self-describing config, tokenizer, processor.

Layout: config.json (`deco_format_version`, the projector config, the vision tower's CLIPVisionConfig and the
LLM's transformers config as dicts, vision layer/feature selection, the conversation template and image
aspect mode), model.safetensors (the MLLM state dict: `vision.model.*`, `projector.*`, `llm.*`; a LoRA
adapter is merged first), the tokenizer files and preprocessor_config.json. Loading builds every part from
the stored configs (no download, no random initialisation) and copies the weights in, so any model deco
can train round-trips exactly, whatever its projector.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoConfig

from deco.models.formats.common import (
    LoadedModel,
    clean_hf_config,
    load_part,
    load_state_file,
    read_json,
    save_state_file,
    skip_weight_init,
)
from deco.models.formats.llava_original import build_llm_from_config, tied_keys
from deco.models.formats.llava_qformer import build_any_projector
from deco.models.projectors.base import stored_projector_config
from deco.models.mllm import MLLM
from deco.models.vision import VisionTower

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def is_deco_config(cfg: dict) -> bool:
    return "deco_format_version" in cfg


def _hf_dict(config) -> dict:
    d = config.to_dict()
    for key in ("_attn_implementation_autoset", "attn_implementation", "_name_or_path", "transformers_version"):
        d.pop(key, None)
    return d


def save_deco_pretrained(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """Write `loaded` (model, tokenizer, image processor, config) as a deco directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model: MLLM = loaded.model
    llm = model.llm
    stage = dict(loaded.config.get("stage") or {})
    if hasattr(llm, "merge_and_unload"):  # a peft adapter: merge into a copy, the caller's model is untouched
        llm = copy.deepcopy(llm).merge_and_unload()
        stage["lora"] = {**(stage.get("lora") or {}), "enabled": False, "merged": True}
    state = {f"vision.{k}": v for k, v in model.vision.state_dict().items()}
    state.update({f"projector.{k}": v for k, v in model.projector.state_dict().items()})
    state.update({f"llm.{k}": v for k, v in llm.state_dict().items()})
    if getattr(llm.config, "tie_word_embeddings", False):
        state.pop("llm.lm_head.weight", None)
    config = {
        "deco_format_version": FORMAT_VERSION,
        "projector": dict(loaded.config["projector"]),
        "vision_config": _hf_dict(model.vision.config),
        "select_layer": int(model.vision.select_layer),
        "select_feature": model.vision.select_feature,
        "llm_config": _hf_dict(llm.config),
        "image_token_id": int(model.image_token_id),
        "stage": stage,
        "image_aspect": loaded.config.get("image_aspect", "pad"),
        "dtype": str(next(llm.parameters()).dtype).removeprefix("torch."),
        "source": loaded.config.get("source") or {},
    }
    import json

    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    save_state_file(state, out / WEIGHTS, metadata={"deco_format_version": str(FORMAT_VERSION)})
    loaded.tokenizer.save_pretrained(str(out))
    if loaded.image_processor is not None:
        loaded.image_processor.save_pretrained(str(out))
    return out


def load_deco_pretrained(path: str | Path, *, map_location: str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """Rebuild a model written by `save_deco_pretrained`."""
    from deco.data.image import build_image_processor, load_image_processor
    from deco.data.tokenizer import load_tokenizer

    path = Path(path)
    cfg = read_json(path / "config.json")
    version = cfg.get("deco_format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: deco_format_version={version} is not supported (this deco reads {FORMAT_VERSION})")
    for key in ("projector", "vision_config", "llm_config"):
        if key not in cfg:
            raise ValueError(f"{path}/config.json lacks '{key}'")
    with skip_weight_init():
        tower = VisionTower(config=clean_hf_config(cfg["vision_config"]), select_layer=int(cfg.get("select_layer", -2)),
                            select_feature=cfg.get("select_feature", "patch"))
    llm_cfg = cfg["llm_config"]
    if "model_type" not in llm_cfg:
        raise ValueError(f"{path}/config.json llm_config lacks model_type")
    llm = build_llm_from_config(AutoConfig.for_model(llm_cfg["model_type"], **clean_hf_config(llm_cfg)))
    projector = build_any_projector(cfg["projector"], in_dim=tower.hidden_size, out_dim=llm.config.hidden_size,
                                    num_patches=tower.num_patches)
    model = MLLM(tower, projector, llm, image_token_id=int(cfg["image_token_id"]))
    allow = tuple(f"llm.{k}" for k in tied_keys(llm))
    report = load_part(model, load_state_file(path / WEIGHTS, map_location), "model", allow_missing=allow)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    tokenizer = load_tokenizer(str(path))
    if tokenizer.convert_ids_to_tokens(model.image_token_id) != "<image>":
        raise ValueError(f"{path}: image_token_id={model.image_token_id} is not '<image>' in the saved tokenizer")
    if (path / "preprocessor_config.json").is_file():
        image_processor, processor_path = load_image_processor(str(path)), str(path)
    else:
        image_processor, processor_path = build_image_processor(tower.image_size), None
    parts = {
        "model": {
            "name": "deco_pretrained",
            "vision": {"config": cfg["vision_config"], "select_layer": tower.select_layer,
                       "select_feature": tower.select_feature},
            "llm": {"name_or_path": str(path)},
            "tokenizer": {"name_or_path": str(path)},
            "image_processor": {"name_or_path": processor_path},
        },
        "projector": stored_projector_config(cfg["projector"]),  # an export older than a key's rename
        "stage": dict(cfg.get("stage") or {}),
        "image_aspect": cfg.get("image_aspect", "pad"),
        "source": {"format": "deco", "path": str(path), "exported_from": cfg.get("source") or {}},
    }
    return LoadedModel(model=model, tokenizer=tokenizer, image_processor=image_processor, config=parts, report=report)
