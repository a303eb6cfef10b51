"""Training-free visual-token reduction: the reducer interface, its registry and the keep-budget checks.

A reducer decides, at inference only, which of the projector's visual tokens the LLM reads. Two kinds:

* **vision** reducers (VisionZip, PruMerge+, DivPrune, `pool`) act between the vision tower and a token-wise
  projector (linear, mlp2x_gelu): from the tower's signals (`VisionSignals`: the selected layer's hidden
  states with [CLS], the [CLS] attention, keys) they return a reduction matrix `M` (b k 1+n) over the tower's
  tokens [CLS, patch_1 .. patch_n]; the LLM reads `projector(M @ hidden)`. Every published rule here (keep,
  merge by average, add the merged tokens) is such a matrix, which also carries relevance back to patches.
* **llm** reducers (FastV) drop visual tokens inside the LLM, after layer K, in prefill
  (`deco.models.reduction.llm_runner`).

Reducers register with `@register_reducer("name")`; `build_reducer(name, keep=..., **knobs)` builds one, and
`reducer.check(num_patches, llm_layers)` raises `ReductionConfigError` naming the bad key
(`reduction.keep`, `reduction.layer`, ...) before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

REDUCERS: dict[str, type["Reducer"]] = {}
NONE = "none"


class ReductionConfigError(ValueError):
    """A reduction setting that cannot work with this model; the message names the key."""


def register_reducer(name: str):
    def wrap(cls: type[Reducer]) -> type[Reducer]:
        if name in REDUCERS and REDUCERS[name] is not cls:
            raise ValueError(f"reducer name '{name}' is already registered by {REDUCERS[name].__name__}")
        REDUCERS[name] = cls
        cls.name = name
        return cls

    return wrap


def reducer_names() -> list[str]:
    return [NONE, *sorted(REDUCERS)]


def build_reducer(name: str | None, keep: int | None = None, **knobs) -> "Reducer | None":
    """The reducer registered as `name` (None for "none"/None); unknown names and knobs name the key."""
    if name in (None, NONE):
        return None
    if name not in REDUCERS:
        raise ReductionConfigError(f"reduction.name={name} is unknown; choose one of: {', '.join(reducer_names())}")
    cls = REDUCERS[name]
    unknown = sorted(set(knobs) - set(cls.knobs))
    if unknown:
        raise ReductionConfigError(f"reduction={name} has no key(s) {unknown}; its keys: keep, {', '.join(cls.knobs) or '-'}")
    if keep is None or isinstance(keep, bool) or not isinstance(keep, int):
        raise ReductionConfigError(f"reduction.keep={keep!r} must be an int (visual tokens the LLM reads)")
    reducer = cls(keep=keep, **knobs)
    reducer.check_static()
    return reducer


def reducer_from_config(section) -> "Reducer | None":
    """A reducer from a config mapping {name, keep, <knobs>} (the `reduction` group); None for none/absent."""
    if not section:
        return None
    section = {str(k): _number(v) for k, v in dict(section).items()}
    return build_reducer(section.pop("name", None), section.pop("keep", None), **section)


def _number(value):
    """"64" -> 64 (command-line model args such as lmms-eval's arrive as strings); "null"/"None" -> None."""
    if isinstance(value, str):
        if value.lower() in ("null", "none", ""):
            return None
        if value.lstrip("-").isdigit():
            return int(value)
    return value


@dataclass
class VisionSignals:
    """What the vision tower's selected layer says about its tokens (index 0 = [CLS], then the n patches).

    hidden: b 1+n d, the selected layer's output (the features LLaVA feeds the projector, [CLS] kept).
    cls_attn: b h n, the selected layer's attention from [CLS] to the patches, per head (softmax over 1+n).
    keys: b 1+n d_head, the selected layer's keys averaged over heads (VisionZip's merge metric).
    next_cls_attn: b n, the next layer's single-head full-width attention q_cls.k / sqrt(d) (PruMerge's
        signal; None when the selected layer is the last one).
    next_keys: b 1+n d, the next layer's full-width keys (PruMerge's merge metric), or None.
    """

    hidden: torch.Tensor
    cls_attn: torch.Tensor
    keys: torch.Tensor
    next_cls_attn: torch.Tensor | None = None
    next_keys: torch.Tensor | None = None

    @property
    def num_patches(self) -> int:
        return self.hidden.shape[1] - 1


class Reducer:
    """Base class: `keep` visual tokens; subclasses set `stage` ("vision" | "llm") and `knobs`."""

    name = "?"
    stage = "vision"
    knobs: tuple[str, ...] = ()
    needs_next_layer = False

    def __init__(self, keep: int):
        self.keep = keep

    def check_static(self) -> None:
        """The checks that need no model (keep >= 1, a knob's own range); subclasses add theirs."""
        if self.keep < 1:
            raise ReductionConfigError(f"reduction.keep={self.keep} must be >= 1 (visual tokens the LLM reads)")

    def check(self, num_patches: int, llm_layers: int | None = None) -> None:
        """Raise ReductionConfigError when `keep` (or a knob) cannot work with `num_patches` visual tokens."""
        self.check_static()
        if self.keep > num_patches:
            raise ReductionConfigError(
                f"reduction.keep={self.keep} must be between 1 and the {num_patches} visual tokens the model has")

    def describe(self) -> dict:
        return {"name": self.name, "keep": self.keep, **{k: getattr(self, k) for k in self.knobs}}


class VisionReducer(Reducer):
    stage = "vision"

    def matrix(self, signals: VisionSignals, project=None) -> torch.Tensor:
        """b k 1+n reduction matrix over [CLS, patches]; `project` maps b m d_vision -> b m d_llm (DivPrune)."""
        raise NotImplementedError


def one_hot_rows(indices: torch.Tensor, width: int, dtype=torch.float32) -> torch.Tensor:
    """b k -> b k width selection matrix (row r picks column indices[b, r])."""
    out = torch.zeros(*indices.shape, width, dtype=dtype, device=indices.device)
    return out.scatter_(-1, indices[..., None], 1.0)


def is_square(value: int) -> bool:
    return value >= 1 and math.isqrt(value) ** 2 == value
