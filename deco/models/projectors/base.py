"""Projector base class and registry.

A projector maps the vision tower's patch features (b n d_in) to the tokens the LLM reads (b q d_out);
it is the only part that differs between the MLLMs this project compares (DeCo, arXiv 2405.20985).
Besides `forward`, every projector states its own query-to-patch relevance R_q2i (q x n), the second
factor of R-GAE's `R_t2i = R_t2q x R_q2i`. Projectors register under a config name with
`@register_projector("name")` and are built by `build_projector` (materialize-style: an unknown name
fails with the list of known ones).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

PROJECTORS: dict[str, type["Projector"]] = {}
# Old spellings of projector keys (docs/design.md, "Names"): until issue 28 the projectors whose only depth is
# their MLP called its Linear layers `layer_num`, which the others use for their main stack.
MLP_DEPTH_RENAMED = {"layer_num": "mlp_depth"}


def register_projector(name: str):
    """Class decorator: make `cls` buildable as `build_projector(name, ...)`."""

    def wrap(cls: type[Projector]) -> type[Projector]:
        if name in PROJECTORS and PROJECTORS[name] is not cls:
            raise ValueError(f"Projector name '{name}' is already registered by {PROJECTORS[name].__name__}")
        PROJECTORS[name] = cls
        return cls

    return wrap


def renamed_config(name: str, cfg: Mapping) -> tuple[dict, list[tuple[str, str]]]:
    """(`cfg` with the old spellings of projector `name`'s keys replaced by the new ones, [(old, new)] replaced).

    An old key's value wins over the new key's: only a stored old config or a user's explicit setting has it."""
    cls = PROJECTORS.get(name)
    renames = [(old, new) for old, new in getattr(cls, "renamed_keys", {}).items() if old in cfg]
    out = dict(cfg)
    for old, new in renames:
        out[new] = out.pop(old)
    return out, renames


def stored_projector_config(cfg: Mapping) -> dict:
    """A projector config stored by an older deco (a checkpoint's, an export's) with today's key names."""
    return renamed_config(cfg.get("name"), cfg)[0]


def build_projector(name: str, in_dim: int, out_dim: int, num_patches: int, **kwargs) -> "Projector":
    """Build the projector registered as `name` (vision width `in_dim` -> LLM width `out_dim`)."""
    """`permute_tokens` (a seed, true = 0, null / false = off) reorders the output tokens by one fixed
    permutation (deco.models.projectors.permuted: the token-layout control)."""
    if name not in PROJECTORS:
        raise ValueError(f"Unknown projector '{name}'; choose one of: {', '.join(sorted(PROJECTORS))}")
    from deco.models.projectors.permuted import permute_seed, permuted

    kwargs, _ = renamed_config(name, kwargs)  # old checkpoints' stored configs: `layer_num` of an MLP-only projector
    seed = permute_seed(kwargs.pop("permute_tokens", None))
    projector = PROJECTORS[name](in_dim=in_dim, out_dim=out_dim, num_patches=num_patches, **kwargs)
    return projector if seed is None else permuted(projector, seed)


class Projector(nn.Module):
    """Base class: holds the widths and the patch count; subclasses implement the mixing step.

    `spatial_tokens`: the output tokens keep the patch grid's layout (token k covers a region; pooling,
    convolutions, grid queries), so R_t2q may be drawn as a grid. Learned queries (Q-Former, resampler)
    have no position: False, and R_t2q is drawn as a ranked strip instead.
    """

    spatial_tokens = True
    renamed_keys: dict[str, str] = {}  # {old key: new key} still accepted (MLP_DEPTH_RENAMED)

    def __init__(self, in_dim: int, out_dim: int, num_patches: int):
        super().__init__()
        for key, value in (("in_dim", in_dim), ("out_dim", out_dim), ("num_patches", num_patches)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_patches = num_patches

    def num_tokens(self) -> int:
        """Number of tokens `forward` returns per image (q)."""
        raise NotImplementedError

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        raise NotImplementedError

    def query_to_patch_relevance(self, *args, **kwargs) -> torch.Tensor:
        """R_q2i: how much each output token (row) draws on each input patch (column)."""
        raise NotImplementedError

    def _check_input(self, patch_feats: torch.Tensor) -> None:
        if patch_feats.dim() != 3 or patch_feats.shape[1] != self.num_patches or patch_feats.shape[2] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects patch features of shape (b, {self.num_patches}, {self.in_dim}), "
                f"got {tuple(patch_feats.shape)}"
            )
