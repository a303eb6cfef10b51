"""Names that must agree everywhere a run is labelled (file names, report rows, sweep dirs, W&B runs)."""

from __future__ import annotations


def projector_name(projector: dict) -> str:
    """The projector's name as it computes: `avgpool` with `pooling=max` is a maxpool (and the reverse)."""
    name = str(projector["name"])
    pooling = projector.get("pooling")
    if name in ("avgpool", "maxpool") and pooling in ("avg", "max"):
        return f"{pooling}pool"
    return name


def projector_name_resolver(name: str, pooling: str | None = None) -> str:
    """`${projector_name:${projector.name},${oc.select:projector.pooling,null}}` in configs (sweep dirs, W&B)."""
    return projector_name({"name": name, "pooling": pooling})
