"""Assemble an MLLM from plain config mappings (what the Hydra configs hold).

`build_mllm(model_cfg, projector_cfg, tokenizer)` builds the vision tower, the LLM (its vocabulary sized to
the tokenizer) and the projector between them (widths and patch count taken from the two ends), so a
config names only what differs. Accepts dicts or OmegaConf containers (any Mapping); imports no Hydra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from deco.models.attention import check_implementation
from deco.models.llm import build_llm
from deco.models.mllm import MLLM
from deco.models.projectors import build_projector
from deco.models.vision import VisionTower
from deco.zoo import resolve

IMAGE_TOKEN = "<image>"
VISION_KEYS = ("name_or_path", "config", "select_layer", "select_feature", "attn_implementation")
LLM_KEYS = ("name_or_path", "config", "attn_implementation", "torch_dtype")


def to_plain(value: Any) -> Any:
    """Recursively turn Mappings / non-string Sequences (e.g. OmegaConf containers) into dicts / lists."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_plain(v) for v in value]
    return value


def _section(cfg: dict[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if key not in cfg or cfg[key] is None:
        raise ValueError(f"model config needs a '{key}' section with keys among: {', '.join(allowed)}")
    section = dict(cfg[key])
    if "name_or_path" in section:  # `zoo:tiny/llm` -> the shipped directory
        section["name_or_path"] = resolve(section["name_or_path"])
    if section.get("attn_implementation") is not None:
        check_implementation(section["attn_implementation"], f"model.{key}.attn_implementation")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"model.{key} has unknown keys {unknown}; allowed: {', '.join(allowed)}")
    return section


def build_mllm(model_cfg: Mapping, projector_cfg: Mapping, tokenizer, image_token: str = IMAGE_TOKEN) -> MLLM:
    """Vision tower + projector + LLM, with `image_token` (in `tokenizer`) as the image placeholder."""
    model_cfg = to_plain(model_cfg)
    projector_cfg = to_plain(projector_cfg)
    vision = VisionTower(**_section(model_cfg, "vision", VISION_KEYS))
    llm = build_llm(**_section(model_cfg, "llm", LLM_KEYS), vocab_size=len(tokenizer))
    if "name" not in projector_cfg:
        raise ValueError("projector config needs a 'name' (e.g. linear, mlp2x_gelu, avgpool, maxpool, qformer)")
    name = projector_cfg.pop("name")
    projector = build_projector(
        name,
        in_dim=vision.hidden_size,
        out_dim=llm.get_input_embeddings().embedding_dim,
        num_patches=vision.num_patches,
        **projector_cfg,
    )
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if image_token_id is None or (unk is not None and image_token_id == unk and image_token != tokenizer.unk_token):
        raise ValueError(
            f"tokenizer has no '{image_token}' token; add it with tokenizer.add_special_tokens("
            f"{{'additional_special_tokens': ['{image_token}']}}) before building the model"
        )
    return MLLM(vision, projector, llm, image_token_id=image_token_id)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
