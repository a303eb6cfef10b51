"""Reader for Honeybee's projectors (kakaobrain/honeybee: C-Abstractor `c-abs`, D-Abstractor `d-abs`).

A Honeybee checkpoint directory holds `config.json` (`HoneybeeConfig`: `num_query_tokens` and
`visual_projector_config` with `projector_type`, `depth`, `mlp_depth`, `hidden_size`, `pos_emb`, `prenorm`,
`num_eos_tokens`; D-Abstractor: Deformable-DETR keys `decoder_layers`, `decoder_attention_heads`,
`decoder_n_points`, `decoder_ffn_dim`, `d_model`) and weights whose projector lives under `abstractor.*`.
deco's `cabstractor` / `dabstractor` use Honeybee's module names, so the mapping is the prefix plus three
renames (D-Abstractor `v_pos_emb` -> `pos_emb`, `output_proj` -> `readout.0`; an old C-Abstractor
`pos_emb` with a CLS row loses it, as Honeybee's own `_load_from_state_dict` does). What deco has no
counterpart for fails with a message: end-of-sequence tokens (`num_eos_tokens > 0`), multi-level
features, an input projection (d_model != vision width). Honeybee feeds the last CLIP layer
(`feature_layer_index=-1`); set `model.vision.select_layer=-1` to match it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from deco.models.formats.common import load_part, load_weights_dir, read_json
from deco.models.projectors import build_projector

PREFIX = "abstractor."
TYPES = {"c-abs": "cabstractor", "d-abs": "dabstractor"}


def honeybee_projector_config(config: dict) -> dict:
    """deco projector config from a Honeybee config.json (or its `visual_projector_config` alone)."""
    proj = config.get("visual_projector_config", config)
    kind = str(proj.get("projector_type", ""))
    name = next((deco for hb, deco in TYPES.items() if kind.startswith(hb)), None)
    if name is None:
        raise ValueError(f"Honeybee projector_type='{kind}' is not supported; known: {', '.join(TYPES)}")
    if int(proj.get("num_eos_tokens") or 0):
        raise ValueError(f"Honeybee num_eos_tokens={proj['num_eos_tokens']}: deco's projectors emit no extra tokens")
    query_num = int(config.get("num_query_tokens") or proj.get("num_query_tokens") or proj.get("num_queries"))
    cfg = {"name": name, "query_num": query_num, "pos_emb": bool(proj.get("pos_emb", False))}
    if name == "cabstractor":
        cfg.update(layer_num=int(proj.get("depth", 3)), mlp_depth=int(proj.get("mlp_depth", 2)),
                   hidden_size=int(proj["hidden_size"]) if proj.get("hidden_size") else None,
                   prenorm=bool(proj.get("prenorm", False)), mlp_act="silu")
    else:
        if int(proj.get("num_feature_levels", 1)) != 1:
            raise ValueError("Honeybee D-Abstractor with num_feature_levels > 1 (multi-level features) "
                             "is not supported")
        if proj.get("pooled_v_target", "query") != "query":
            raise ValueError(f"Honeybee pooled_v_target='{proj['pooled_v_target']}' is not supported; only 'query'")
        cfg.update(layer_num=int(proj.get("decoder_layers", 6)),
                   num_attention_heads=int(proj.get("decoder_attention_heads", 8)),
                   num_points=int(proj.get("decoder_n_points", 4)), ffn_dim=int(proj.get("decoder_ffn_dim", 1024)))
    return cfg


def honeybee_projector_state(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """`abstractor.*` keys (other keys ignored) -> deco projector keys."""
    out = {}
    for key, value in state.items():
        if not key.startswith(PREFIX):
            continue
        key = key[len(PREFIX):]
        if key.startswith(("input_proj.", "level_emb")) and name == "dabstractor":
            raise ValueError(f"Honeybee D-Abstractor key '{PREFIX}{key}' (input projection / level embedding) "
                             "is not supported: deco's D-Abstractor works at the vision width on one level")
        if key.startswith("eos_tokens") or key.startswith("vit_eos"):
            raise ValueError("Honeybee end-of-sequence tokens are not supported (num_eos_tokens must be 0)")
        if name == "dabstractor":
            key = {"v_pos_emb": "pos_emb"}.get(key, key)
            if key.startswith("output_proj."):
                key = "readout.0." + key[len("output_proj."):]
        out[key] = value
    return out


def load_honeybee_projector(path: str | Path, in_dim: int, out_dim: int, num_patches: int,
                            map_location: str = "cpu"):
    """(projector, its config, load report) from a Honeybee checkpoint directory."""
    path = Path(path)
    cfg = honeybee_projector_config(read_json(path / "config.json"))
    state = honeybee_projector_state(load_weights_dir(path, map_location), cfg["name"])
    if not state:
        raise ValueError(f"{path}: no projector weights ({PREFIX}*) found")
    if cfg["name"] == "dabstractor" and "readout.0.weight" not in state:
        cfg["mlp_depth"] = 0  # Honeybee's output_proj is an Identity when d_model == LLM width
    pos = state.get("pos_emb")
    if pos is not None and pos.shape[1] == num_patches + 1:
        state["pos_emb"] = pos[:, 1:]  # obsolete CLS position
    projector = build_projector(cfg["name"], in_dim=in_dim, out_dim=out_dim, num_patches=num_patches,
                                **{k: v for k, v in cfg.items() if k != "name"})
    return projector, cfg, load_part(projector, state, "projector")
