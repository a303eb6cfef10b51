"""LLaVA-style `mm_projector_type` strings <-> deco projector configs, and projector key names.

LLaVA-1.5 writes `linear` or `mlpNx_gelu` into config.json; the DeCo paper's checkpoints extend that with
`<projector><depth>_<query_num>` names such as `avgpool2_144`, `maxpool2_64` or `qformer2_144` (the depth is
the MLP's `mlp_depth` for pooling projectors, the Q-Former's `layer_num`). `parse_projector_type` turns such a
string into deco's projector config ({"name", "mlp_depth" or "layer_num", "query_num", ...}) so a user never repeats it; `projector_type_of` is the inverse used when exporting.
`projector_key_aliases` maps the parameter names other codebases use (LLaVA's bare `nn.Linear` /
`nn.Sequential`, DeCo's `sampler` + `mlp_projector.*`, llava-hf's `linear_1`/`linear_2`, the LLaVA-fork
Q-Former's `proj.*`) onto deco's projector modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from deco.models.formats.mobilevlm import mobilevlm_key, parse_mobilevlm_type

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
_COMPRESSIVE = re.compile(r"^(avgpool|maxpool|qformer)(\d+)_(\d+)$")

KNOWN_FORMS = (
    "linear, mlp<N>x_gelu (e.g. mlp2x_gelu), avgpool<L>_<Q>, maxpool<L>_<Q>, qformer<L>_<Q> (e.g. avgpool2_144), "
    "ldpnet, ldpnetv2 (MobileVLM)"
)


def parse_projector_type(projector_type: str | None) -> dict:
    """`mm_projector_type` -> deco projector config.

    >>> parse_projector_type("avgpool2_144")
    {'name': 'avgpool', 'mlp_depth': 2, 'query_num': 144, 'pooling': 'avg'}
    """
    if projector_type is None:
        projector_type = "linear"  # LLaVA's default when the key is absent
    if not isinstance(projector_type, str):
        raise ValueError(f"mm_projector_type must be a string, got {projector_type!r}; known forms: {KNOWN_FORMS}")
    text = projector_type.strip()
    if text == "linear":
        return {"name": "linear"}
    match = _MLP.match(text)
    if match:
        depth = int(match.group(1))
        if depth < 1:
            raise ValueError(f"mm_projector_type='{projector_type}': the MLP needs at least one layer")
        return {"name": "mlp2x_gelu", "mlp_depth": depth}
    match = _COMPRESSIVE.match(text)
    if match:
        name, depth, query_num = match.group(1), int(match.group(2)), int(match.group(3))
        if depth < 1 or query_num < 1:
            raise ValueError(f"mm_projector_type='{projector_type}': the depth and query_num must be >= 1")
        cfg = {"name": name, "layer_num" if name == "qformer" else "mlp_depth": depth, "query_num": query_num}
        if name in ("avgpool", "maxpool"):
            cfg["pooling"] = name[:3]
        return cfg
    mobile = parse_mobilevlm_type(text)
    if mobile is not None:
        return mobile
    if text == "identity":
        raise ValueError(
            "mm_projector_type='identity' is not supported: deco has no identity projector "
            "(vision width must be mapped to the LLM width)"
        )
    raise ValueError(f"unknown mm_projector_type '{projector_type}'; known forms: {KNOWN_FORMS}")


def paper_depth(projector_cfg: Mapping) -> int:
    """The depth in a paper-style name (`avgpool2_144`, `qformer2_144`, `mlp2x_gelu`): the projector's main stack
    (`layer_num`) where it has one, else its MLP (`mlp_depth`, or `layer_num` in configs older than issue 28)."""
    return int(projector_cfg.get("layer_num", projector_cfg.get("mlp_depth", 2)))


def projector_type_of(projector_cfg: Mapping) -> str:
    """deco projector config -> `mm_projector_type` string (the inverse of `parse_projector_type`)."""
    name = projector_cfg.get("name")
    if projector_cfg.get("permute_tokens") not in (None, False):
        raise ValueError(
            "projector.permute_tokens is a deco control with no LLaVA mm_projector_type; export "
            "the unpermuted projector"
        )
    if name == "linear":
        return "linear"
    if name == "mlp2x_gelu":
        return f"mlp{paper_depth(projector_cfg)}x_gelu"
    if name in ("avgpool", "maxpool", "qformer"):
        pooling = projector_cfg.get("pooling")
        if name in ("avgpool", "maxpool") and pooling is not None:
            name = f"{pooling}pool"  # `projector=avgpool pooling=max` is a max-pooling projector
        return f"{name}{paper_depth(projector_cfg)}_{int(projector_cfg['query_num'])}"
    raise ValueError(f"projector '{name}' has no LLaVA mm_projector_type name; known forms: {KNOWN_FORMS}")


def projector_key_aliases(name: str, keys: list[str]) -> dict[str, str]:
    """{checkpoint key (relative to the projector): deco key} for the naming schemes we know."""
    out = {}
    for key in keys:
        new = key
        if name == "mlp2x_gelu":
            new = re.sub(r"^linear_(\d+)\.", lambda m: f"{2 * (int(m.group(1)) - 1)}.", key)  # llava-hf
        elif name in ("avgpool", "maxpool"):
            if re.match(r"^\d+\.", key):  # a bare Sequential MLP (pooling done outside)
                new = "mlp_projector." + key
        elif name == "qformer":
            new = re.sub(r"^proj\.", "language_projection.", key)  # LLaVA-fork Blip2 projector
        elif name in ("ldp", "ldpv2"):
            new = mobilevlm_key(name, key)
        out[key] = new
    return out
