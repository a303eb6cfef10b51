"""Training-free visual-token reduction beside the trained projectors (docs/reduction.md).

    from deco.models.reduction import build_reducer
    model.set_reduction(build_reducer("visionzip", keep=64))   # or "fastv", "prumerge_plus", "divprune", "pool"

Registry and interface: `base`; one file per method; the tower's [CLS] signals: `signals`; the layer-by-layer
LLM run with pruning for FastV: `llm_runner`; prefill FLOPs and measured latency: `efficiency`.
"""

from deco.models.reduction import divprune, fastv, pool, prumerge, visionzip  # noqa: F401  (register)
from deco.models.reduction.base import (NONE, REDUCERS, Reducer, ReductionConfigError, VisionReducer, VisionSignals,
                                        build_reducer, reducer_from_config, reducer_names)
from deco.models.reduction.signals import vision_signals

__all__ = ["NONE", "REDUCERS", "Reducer", "ReductionConfigError", "VisionReducer", "VisionSignals", "build_reducer",
           "reducer_from_config", "reducer_names", "vision_signals", "reduce_features"]


def reduce_features(vision, projector, reducer: VisionReducer, pixel_values):
    """(tower features reduced, M): M (b k 1+n) over [CLS, patches], features M @ hidden (b k d_vision)."""
    import torch

    with torch.no_grad():
        signals = vision_signals(vision, pixel_values, next_layer=reducer.needs_next_layer)
    param = next(projector.parameters(), None)
    hidden = signals.hidden.to(param.dtype) if param is not None else signals.hidden
    with torch.no_grad():
        mat = reducer.matrix(signals, project=projector.forward_tokens).to(hidden.dtype)
    return mat @ hidden, mat
