"""transformers' llava-hf layout (`llava-hf/llava-1.5-7b-hf`, `LlavaForConditionalGeneration`): read and write.

config.json has `model_type: llava` with `vision_config` (CLIP), `text_config` (the LLM), `image_token_index`,
`vision_feature_layer`, `vision_feature_select_strategy` ("default" drops CLS = LLaVA's "patch") and a fixed
`LlavaMultiModalProjector` (linear_1, GELU, linear_2 = deco's `mlp2x_gelu`). Weight names exist in three
generations (hub: `language_model.model.*`, `vision_tower.vision_model.*`; transformers 4.5x: `model.language_model.*`,
`model.vision_tower.*`, `lm_head`; transformers 5 writes the hub names without `vision_model.`); all load.
llava-hf repeats `<image>` image_seq_length times in the prompt, deco keeps one placeholder and expands it in
the model, so the same tokenizer (with `<image>`) serves both. `save_llava_hf` writes the reverse for models
whose projector llava-hf can express (mlp2x_gelu with 2 layers).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, CLIPVisionConfig

from deco.models.formats.common import (
    LoadedModel,
    clean_hf_config,
    load_part,
    load_weights_dir,
    merge_reports,
    read_json,
    save_state_file,
    skip_weight_init,
)
from deco.models.formats.llava_original import (
    build_llm_from_config,
    fit_vision_keys,
    grow_vocab,
    tied_keys,
)
from deco.models.mllm import MLLM
from deco.models.projectors import build_projector
from deco.models.vision import VisionTower

log = logging.getLogger(__name__)

STRATEGIES = {"default": "patch", "full": "cls_patch"}

# (pattern, part, replacement) applied to every llava-hf key, first match wins
KEY_RULES = (
    (re.compile(r"^(?:model\.)?vision_tower\.(?:vision_model\.)?(.*)$"), "vision", r"\1"),
    (re.compile(r"^(?:model\.)?multi_modal_projector\.(.*)$"), "projector", r"\1"),
    (re.compile(r"^model\.language_model\.(.*)$"), "llm", r"model.\1"),
    (re.compile(r"^language_model\.model\.(.*)$"), "llm", r"model.\1"),
    (re.compile(r"^(?:language_model\.)?lm_head\.(.*)$"), "llm", r"lm_head.\1"),
)


def is_llava_hf_config(cfg: dict) -> bool:
    return cfg.get("model_type") == "llava" and ("text_config" in cfg or "vision_config" in cfg)


def split_llava_hf_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict, list[str]]:
    parts: dict[str, dict] = {"vision": {}, "projector": {}, "llm": {}}
    unknown = []
    for key, value in state.items():
        for pattern, part, repl in KEY_RULES:
            if pattern.match(key):
                parts[part][pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    return parts["vision"], parts["projector"], parts["llm"], unknown


def check_llava_hf(cfg: dict, path: Path) -> None:
    layer = cfg.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"{path}: vision_feature_layer={layer} (several layers concatenated) is not supported; one int only")
    strategy = cfg.get("vision_feature_select_strategy", "default")
    if strategy not in STRATEGIES:
        raise ValueError(f"{path}: vision_feature_select_strategy='{strategy}' is unknown; known: default, full")
    act = cfg.get("projector_hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{path}: projector_hidden_act='{act}' is not supported; deco's mlp2x_gelu uses exact gelu")
    if not cfg.get("multimodal_projector_bias", True):
        raise ValueError(f"{path}: multimodal_projector_bias=false is not supported")
    vision_type = (cfg.get("vision_config") or {}).get("model_type", "clip_vision_model")
    if vision_type != "clip_vision_model":
        raise ValueError(f"{path}: vision tower '{vision_type}' is not supported; deco's VisionTower is CLIP")


def load_llava_hf(path: str | Path, *, map_location: str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """Load a LlavaForConditionalGeneration directory into deco's MLLM."""
    from deco.data.image import build_image_processor, load_image_processor
    from deco.data.tokenizer import load_tokenizer

    path = Path(path)
    cfg = read_json(path / "config.json")
    check_llava_hf(cfg, path)
    vision_cfg = clean_hf_config(cfg.get("vision_config") or {})
    text_cfg = dict(cfg.get("text_config") or {"model_type": "llama"})
    family = text_cfg.get("model_type", "llama")
    with skip_weight_init():
        tower = VisionTower(
            config=vision_cfg,
            select_layer=int(cfg.get("vision_feature_layer", -2)),
            select_feature=STRATEGIES[cfg.get("vision_feature_select_strategy", "default")],
        )
    llm = build_llm_from_config(AutoConfig.for_model(family, **clean_hf_config(text_cfg)), dtype)
    vision_state, projector_state, llm_state, unknown = split_llava_hf_state(load_weights_dir(path, map_location))
    vision_report = load_part(tower.model, fit_vision_keys(vision_state, tower), "vision")
    llm_report = load_part(llm, llm_state, "llm", allow_missing=tied_keys(llm))
    projector = build_projector("mlp2x_gelu", in_dim=tower.hidden_size, out_dim=llm.config.hidden_size,
                                num_patches=tower.num_patches, mlp_depth=2)
    aliases = {k: re.sub(r"^linear_(\d+)\.", lambda m: f"{2 * (int(m.group(1)) - 1)}.", k) for k in projector_state}
    projector_report = load_part(projector, {aliases[k]: v for k, v in projector_state.items()}, "projector")

    tokenizer = load_tokenizer(str(path), model_max_length=int(text_cfg.get("max_position_embeddings", 2048)))
    image_token_id = int(cfg.get("image_token_index", cfg.get("image_token_id", 32000)))
    token = tokenizer.convert_ids_to_tokens(image_token_id)
    if token != "<image>":
        raise ValueError(f"{path}: image_token_index={image_token_id} is '{token}' in the tokenizer, not '<image>'")
    grow_vocab(llm, tokenizer)
    if dtype is not None:
        tower = tower.to(dtype)
    model = MLLM(tower, projector.to(llm.dtype), llm, image_token_id=image_token_id)
    model.eval()
    if (path / "preprocessor_config.json").is_file():
        image_processor, processor_path = load_image_processor(str(path)), str(path)
    else:
        log.warning("%s has no preprocessor_config.json: standard CLIP preprocessing at %d px", path, tower.image_size)
        image_processor, processor_path = build_image_processor(tower.image_size), None
    parts = {
        "model": {
            "name": "llava_hf",
            "vision": {"config": vision_cfg, "select_layer": tower.select_layer, "select_feature": tower.select_feature},
            "llm": {"name_or_path": str(path)},
            "tokenizer": {"name_or_path": str(path)},
            "image_processor": {"name_or_path": processor_path},
        },
        "projector": {"name": "mlp2x_gelu", "mlp_depth": 2},
        "stage": {"name": "llava_hf", "template": "vicuna_v1"},
        # llava-hf's processor crops (no expand2square) unless do_pad is set
        "image_aspect": "pad" if getattr(image_processor, "do_pad", False) else "crop",
        "source": {"format": "llava_hf", "path": str(path)},
    }
    report = merge_reports(vision_report, llm_report, projector_report, {"unused": [f"unknown:{k}" for k in unknown]})
    return LoadedModel(model=model, tokenizer=tokenizer, image_processor=image_processor, config=parts, report=report)


# ---------------------------------------------------------------- export


def _plain_llm(llm: nn.Module) -> nn.Module:
    """The LLM with any LoRA adapter merged in (on a copy, the caller's model is untouched)."""
    if hasattr(llm, "merge_and_unload"):
        import copy

        return copy.deepcopy(llm).merge_and_unload()
    return llm


def llava_hf_state(model: MLLM) -> dict[str, torch.Tensor]:
    """deco MLLM -> llava-hf weight names (the hub layout, which every transformers version loads)."""
    projector = model.projector
    if getattr(projector, "mlp_depth", None) != 2 or not hasattr(projector, "0") or not hasattr(projector, "2"):
        raise ValueError(
            f"llava-hf can only hold a 2-layer mlp2x_gelu projector (LlavaMultiModalProjector); this model has "
            f"{type(projector).__name__}. Export it with format=deco instead"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in model.vision.model.state_dict().items():
        state["vision_tower.vision_model." + key.removeprefix("vision_model.")] = value
    for key, value in projector.state_dict().items():
        index, rest = key.split(".", 1)
        state[f"multi_modal_projector.linear_{int(index) // 2 + 1}.{rest}"] = value
    for key, value in _plain_llm(model.llm).state_dict().items():
        if key.startswith("model."):
            state["language_model." + key] = value
        elif key.startswith("lm_head."):
            state["language_model." + key] = value
        else:
            raise ValueError(f"unexpected LLM weight name '{key}': expected model.* or lm_head.*")
    return state


def save_llava_hf(model: MLLM, tokenizer, image_processor, out_dir: str | Path) -> Path:
    """Write `model` as a LlavaForConditionalGeneration directory (config, safetensors, tokenizer, processor)."""
    from transformers import LlavaConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = llava_hf_state(model)
    llm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    vision_cfg = model.vision.config.to_dict()
    text_cfg = llm.config.to_dict()
    for cfg in (vision_cfg, text_cfg):
        for key in ("_attn_implementation_autoset", "attn_implementation", "_name_or_path", "transformers_version"):
            cfg.pop(key, None)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**clean_hf_config(vision_cfg)),
        text_config=text_cfg,
        image_token_index=int(model.image_token_id),
        image_seq_length=int(model.num_visual_tokens),
        projector_hidden_act="gelu",
        vision_feature_select_strategy={v: k for k, v in STRATEGIES.items()}[model.vision.select_feature],
        vision_feature_layer=int(model.vision.select_layer),
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    dtype = next(model.llm.parameters()).dtype
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(str(out))
    if config.tie_word_embeddings:
        state.pop("language_model.lm_head.weight", None)
    save_state_file(state, out / "model.safetensors")
    tokenizer.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))
    _save_processor_config(out, model)
    return out


def _save_processor_config(out: Path, model: MLLM) -> None:
    """processor_config.json so LlavaProcessor expands `<image>` into the right number of tokens."""
    import json

    # LlavaProcessor: grid**2 + num_additional_image_tokens (CLIP's CLS), minus 1 for 'default'
    payload = {
        "processor_class": "LlavaProcessor",
        "patch_size": int(model.vision.patch_size),
        "vision_feature_select_strategy": {v: k for k, v in STRATEGIES.items()}[model.vision.select_feature],
        "num_additional_image_tokens": 1,
        "image_token": "<image>",
    }
    (out / "processor_config.json").write_text(json.dumps(payload, indent=2) + "\n")
