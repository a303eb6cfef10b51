"""Reader for LLaVA-1.5 original checkpoints (`liuhaotian/llava-v1.5-7b` layout).

A LLaVA directory is a Llama checkpoint (`LlavaLlamaForCausalLM`) whose state dict also holds the projector
under `model.mm_projector.*` and sometimes the CLIP tower under `model.vision_tower.vision_tower.*`; its
config.json is a Llama config plus `mm_*` keys: `mm_projector_type` (parsed into deco's projector, e.g.
`mlp2x_gelu` or the DeCo paper's `avgpool2_144`), `mm_vision_tower` (the CLIP checkpoint the tower is loaded
from, as LLaVA does: released checkpoints carry no tower weights), `mm_vision_select_layer` /
`mm_vision_select_feature` and `image_aspect_ratio`. The pieces are reused by the LoRA reader.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from deco.models.formats.common import (
    LoadedModel,
    clean_hf_config,
    load_part,
    load_state_file,
    load_weights_dir,
    merge_reports,
    read_json,
    skip_weight_init,
    weight_files,
)
from deco.models.formats.llava_qformer import build_any_projector
from deco.models.formats.projector_type import parse_projector_type, projector_key_aliases
from deco.models.mllm import MLLM
from deco.models.vision import VisionTower

log = logging.getLogger(__name__)

# model_type in LLaVA configs -> the transformers family of the language model inside
LLM_FAMILIES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral", "llama": "llama",
                "mistral": "mistral", "mobilevlm": "llama"}
ASPECTS = {"pad": "pad", "square": "crop", None: "crop"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
LLAVA_ONLY_KEYS = ("mm_", "image_aspect_ratio", "tokenizer_model_max_length", "tokenizer_padding_side",
                   "tune_mm_", "freeze_mm_", "unfreeze_mm_", "use_mm_proj", "image_grid_pinpoints", "model_base")

PROJECTOR_PREFIXES = ("model.mm_projector.",)
VISION_PREFIXES = ("model.vision_tower.vision_tower.", "model.vision_tower.")
IGNORED_PREFIXES = ("model.vision_resampler.",)
PROJECTOR_ONLY = "mm_projector.bin"  # pretraining-stage output (tune_mm_mlp_adapter)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "non_lora_trainables.bin",
                "adapter_model.bin", "mm_projector.bin"]


def is_llava_config(cfg: dict) -> bool:
    return any(k in cfg for k in ("mm_projector_type", "mm_vision_tower", "mm_hidden_size")) or any(
        a.startswith("Llava") and a.endswith("ForCausalLM") for a in cfg.get("architectures") or []
    )


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


def resolve_local(name_or_path: str | os.PathLike, what: str) -> Path:
    """A local directory for `name_or_path`: the path itself, or a hub snapshot (needs network)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if text.startswith(("/", "./", "../", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"{what} not found: {text} (not a directory, and not an org/name hub id)")
    try:
        from huggingface_hub import snapshot_download

        # configs, tokenizer and safetensors first; pickled weights only when a repo has no safetensors
        # (hub repos often hold both, and TF/Flax copies we never read)
        local = Path(snapshot_download(text, allow_patterns=HUB_PATTERNS))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(text, allow_patterns=[*HUB_PATTERNS, "*.bin"]))
        return local
    except Exception as err:  # offline, unknown repo, gated ...
        raise FileNotFoundError(
            f"{what} '{text}' is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); download it and pass its path"
        ) from None


# ---------------------------------------------------------------- config -> parts


def llm_config_of(cfg: dict):
    """The language model's transformers config from a LLaVA config.json (mm_* keys dropped)."""
    model_type = cfg.get("model_type", "llava")
    family = LLM_FAMILIES.get(model_type)
    if family is None:
        raise ValueError(
            f"LLaVA config model_type='{model_type}' is not supported; known: {', '.join(sorted(LLM_FAMILIES))}"
        )
    kwargs = {k: v for k, v in clean_hf_config(cfg).items() if not k.startswith(LLAVA_ONLY_KEYS)}
    return AutoConfig.for_model(family, **kwargs)


def check_supported(cfg: dict, path: Path) -> None:
    if cfg.get("mm_use_im_start_end"):
        raise ValueError(f"{path}: mm_use_im_start_end=true (LLaVA-1.0 image start/end tokens) is not supported")
    if cfg.get("mm_use_im_patch_token"):
        raise ValueError(f"{path}: mm_use_im_patch_token=true is not supported")
    merge = cfg.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        raise ValueError(f"{path}: mm_patch_merge_type='{merge}' (LLaVA-NeXT any-resolution) is not supported; only 'flat'")
    if cfg.get("image_aspect_ratio") not in ASPECTS:
        raise ValueError(
            f"{path}: image_aspect_ratio='{cfg.get('image_aspect_ratio')}' is not supported; known: pad, square"
        )


def build_vision(cfg: dict, vision_tower: str | None, path: Path) -> tuple[VisionTower, str]:
    """CLIP tower from `vision_tower` (override) or the config's `mm_vision_tower`."""
    name = vision_tower or cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if not name:
        raise ValueError(f"{path}/config.json has no mm_vision_tower; pass the CLIP checkpoint as load.vision_tower=...")
    local = resolve_local(name, "vision tower (mm_vision_tower)")
    tower = VisionTower(
        name_or_path=str(local),
        select_layer=int(cfg.get("mm_vision_select_layer", -2)),
        select_feature=cfg.get("mm_vision_select_feature", "patch"),
    )
    mm_hidden = cfg.get("mm_hidden_size")
    if mm_hidden is not None and int(mm_hidden) != tower.hidden_size:
        raise ValueError(
            f"{path}: mm_hidden_size={mm_hidden} but the vision tower {name} has hidden_size={tower.hidden_size}"
        )
    return tower, str(name)


def split_llava_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict, list[str]]:
    """LLaVA state dict -> (vision, projector, llm, ignored keys); prefixes removed."""
    vision, projector, llm, ignored = {}, {}, {}, []
    for key, value in state.items():
        if key.endswith(".inv_freq"):  # rotary buffers of old checkpoints, recomputed at build
            continue
        if key.startswith(PROJECTOR_PREFIXES):
            projector[key.split("mm_projector.", 1)[1]] = value
        elif key.startswith(VISION_PREFIXES):
            prefix = next(p for p in VISION_PREFIXES if key.startswith(p))
            vision[key[len(prefix):]] = value
        elif key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
        else:
            llm[key] = value
    return vision, projector, llm, ignored


def fit_vision_keys(state: dict[str, torch.Tensor], tower: VisionTower) -> dict[str, torch.Tensor]:
    """CLIP keys with or without the `vision_model.` prefix, whichever this transformers version uses."""
    wants_prefix = any(k.startswith("vision_model.") for k in tower.model.state_dict())
    out = {}
    for key, value in state.items():
        bare = key.removeprefix("vision_model.")
        out[("vision_model." + bare) if wants_prefix else bare] = value
    return out


def projector_config_of(cfg: dict, projector_state: dict[str, torch.Tensor]) -> dict:
    """deco projector config from `mm_projector_type`, completed from the weights where they tell more."""
    projector = parse_projector_type(cfg.get("mm_projector_type"))
    if projector["name"] == "qformer":
        mapped = {projector_key_aliases("qformer", [k])[k]: v for k, v in projector_state.items()}
        if "query_tokens" in mapped:
            projector["hidden_size"] = int(mapped["query_tokens"].shape[-1])
        heads = cfg.get("mm_qformer_num_heads")
        if heads is None:  # LLaVA-fork Q-Formers use 32 heads
            heads = 32 if projector.get("hidden_size", 0) % 32 == 0 else None
        if heads is not None:
            projector["num_attention_heads"] = int(heads)
        projector["dropout"] = 0.0
        linears = sorted({int(m.group(1)) for k in mapped if (m := re.match(r"^language_projection\.(\d+)\.weight$", k))})
        if linears:  # an MLP head (`proj.0`, `proj.2`, ...) instead of one Linear
            projector["out_layer_num"] = len(linears)
    return projector


def build_llm_from_config(llm_config, dtype: torch.dtype | None = None) -> nn.Module:
    with skip_weight_init():
        llm = AutoModelForCausalLM.from_config(llm_config, attn_implementation="eager")
    return llm.to(dtype) if dtype is not None else llm


def tied_keys(llm: nn.Module) -> tuple[str, ...]:
    return ("lm_head.weight",) if getattr(llm.config, "tie_word_embeddings", False) else ()


def load_projector(projector_cfg: dict, projector_state: dict, tower: VisionTower, llm: nn.Module, where: str):
    projector = build_any_projector(
        projector_cfg, in_dim=tower.hidden_size, out_dim=llm.get_input_embeddings().embedding_dim,
        num_patches=tower.num_patches,
    )
    if not projector_state and any(True for _ in projector.parameters()):
        raise ValueError(f"{where}: no projector weights (model.mm_projector.*) found")
    aliases = projector_key_aliases(projector_cfg["name"], list(projector_state))
    state = {aliases[k]: v for k, v in projector_state.items()}
    return projector, load_part(projector, state, "projector")


def grow_vocab(llm: nn.Module, tokenizer) -> None:
    """Room for tokens the tokenizer gained (e.g. `<image>`); the placeholder's row is never looked up."""
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer))


def image_processor_for(vision_dir: Path, tower: VisionTower):
    from deco.data.image import build_image_processor, load_image_processor

    if (vision_dir / "preprocessor_config.json").is_file():
        return load_image_processor(str(vision_dir)), str(vision_dir)
    log.warning("no preprocessor_config.json in %s: using the standard CLIP preprocessing at %d px",
                vision_dir, tower.image_size)
    return build_image_processor(tower.image_size), None


def finish(model: MLLM, tokenizer, image_processor, parts: dict[str, Any], report: dict) -> LoadedModel:
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, image_processor=image_processor, config=parts, report=report)


def load_llava_original(
    path: str | Path,
    *,
    base: str | None = None,
    vision_tower: str | None = None,
    map_location: str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a LLaVA-1.5-layout directory (LLM + `model.mm_projector.*` in one checkpoint).

    A pretraining-stage directory (config.json + `mm_projector.bin`, no LLM weights) takes the LLM and
    tokenizer from `base` (else the config's `model_base` / `_name_or_path`), as LLaVA's builder does.
    """
    from deco.data.tokenizer import IMAGE_TOKEN, load_tokenizer

    path = Path(path)
    cfg = read_json(path / "config.json")
    check_supported(cfg, path)
    tower, tower_name = build_vision(cfg, vision_tower, path)
    llm_dir = path
    if not weight_files(path) and (path / PROJECTOR_ONLY).is_file():
        name = base or cfg.get("model_base") or cfg.get("_name_or_path")
        if not name:
            raise ValueError(f"{path} holds only {PROJECTOR_ONLY} (a pretraining-stage projector); pass the LLM "
                             "it was trained on as load.base=<dir or hub id>")
        llm_dir = resolve_local(name, "base model for mm_projector.bin")
        _, _, llm_state, _ = split_llava_state(load_weights_dir(llm_dir, map_location))
        vision_state, projector_state, _, ignored = split_llava_state(load_state_file(path / PROJECTOR_ONLY, map_location))
    else:
        vision_state, projector_state, llm_state, ignored = split_llava_state(load_weights_dir(path, map_location))
    if vision_state:  # LLaVA loads the tower from mm_vision_tower and ignores these (GitHub issue #672)
        log.warning("%s: %d vision-tower weights in the checkpoint are ignored; the tower comes from %s",
                    path, len(vision_state), tower_name)
    llm = build_llm_from_config(llm_config_of(cfg), dtype)
    llm_report = load_part(llm, llm_state, "llm", allow_missing=tied_keys(llm))
    projector_cfg = projector_config_of(cfg, projector_state)
    projector, projector_report = load_projector(projector_cfg, projector_state, tower, llm, str(path))
    tokenizer_dir = path if has_tokenizer(path) else llm_dir
    tokenizer = load_tokenizer(str(tokenizer_dir), model_max_length=int(cfg.get("tokenizer_model_max_length", 2048)))
    grow_vocab(llm, tokenizer)
    model = MLLM(tower, projector.to(llm.dtype), llm, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    image_processor, processor_path = image_processor_for(resolve_local(tower_name, "vision tower"), tower)
    report = merge_reports(llm_report, projector_report,
                           {"unused": [f"vision(ignored):{k}" for k in vision_state] + ignored})
    parts = llava_parts(cfg, path, "llava_original", tower_name, processor_path, projector_cfg, llm_path=str(llm_dir))
    parts["model"]["tokenizer"]["name_or_path"] = str(tokenizer_dir)
    return finish(model, tokenizer, image_processor, parts, report)


def llava_parts(cfg: dict, path: Path, fmt: str, tower_name: str, processor_path: str | None, projector_cfg: dict,
                llm_path: str | None = None) -> dict:
    """The LoadedModel.config of a LLaVA-family checkpoint."""
    return {
        "model": {
            "name": fmt,
            "vision": {"name_or_path": tower_name, "select_layer": int(cfg.get("mm_vision_select_layer", -2)),
                       "select_feature": cfg.get("mm_vision_select_feature", "patch")},
            "llm": {"name_or_path": llm_path or str(path)},
            "tokenizer": {"name_or_path": str(path), "model_max_length": int(cfg.get("tokenizer_model_max_length", 2048))},
            "image_processor": {"name_or_path": processor_path},
        },
        "projector": projector_cfg,
        "stage": {"name": "llava", "template": "vicuna_v1"},  # LLaVA-1.5 eval conv mode
        "image_aspect": ASPECTS[cfg.get("image_aspect_ratio")],
        "source": {"format": fmt, "path": str(path)},
    }
