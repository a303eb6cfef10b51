"""MobileVLM's projectors (Meituan-AutoML/MobileVLM): `mm_projector_type` `ldpnet` (LDP) and `ldpnetv2` (LDPv2).

A MobileVLM checkpoint is a LLaVA-layout directory (model_type `mobilevlm`, a Llama LLM) whose projector
lives under `model.mm_projector.*`: v1 wraps its `LDPBlock` in `LDPNetProjector.model` (`model.mlp.1`,
`model.mb_block.1.block.0.0`, ...), v2's `LDPNetV2Projector` holds `mlp.mlp.*` and `peg.peg.0`. deco's `ldp`
/ `ldpv2` use those names, so the key mapping drops v1's `model.` and keeps v2's as they are; the LLaVA
reader (`llava_original`) calls `parse_mobilevlm_type` and `mobilevlm_key` for these types. MobileVLM
downsamples by 2 per side (its LDP stride, its LDPv2 12 x 12 pool on 24 x 24 patches), so the token count
follows from the vision tower: `query_num` is left to the projector (None = half the grid side, squared).
"""

from __future__ import annotations

import re

TYPES = {"ldpnet": "ldp", "ldpnetv2": "ldpv2"}


def parse_mobilevlm_type(projector_type: str) -> dict | None:
    """deco projector config for a MobileVLM `mm_projector_type`, or None when it is not one."""
    name = TYPES.get(projector_type.strip())
    return None if name is None else {"name": name, "mlp_depth": 2}


def mobilevlm_key(name: str, key: str) -> str:
    """A key relative to `mm_projector.` -> deco's key for projector `name` (ldp / ldpv2)."""
    if name == "ldp":
        return re.sub(r"^model\.", "", key)
    return key
