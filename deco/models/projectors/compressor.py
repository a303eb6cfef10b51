"""Base class of the projector zoo (C-/D-Abstractor, pixel shuffle, LDP, TokenPacker, resampler).

As in Honeybee's base `Projector` (kakaobrain/honeybee, `honeybee/projectors/projectors.py`), the shared
parts live here and each subclass holds only its mixing step:

    patches (b n d_in) -> [prenorm: LayerNorm] -> [+ pos_emb (1 n d_in)] -> mix (subclass: n -> q tokens)
                       -> [readout: MLP of `mlp_depth` Linear layers] -> tokens (b q d_out)

`query_rule` states which `query_num` a method accepts ("square": a perfect square <= n; "divisor": a
square whose side divides the patch grid side, for stride / block methods; "any": 1..n); the same rule
is checked in config validation (`deco.utils.config`) before any model is built. R_q2i helpers shared by
the structural projectors (a 3x3 conv's spatial footprint as a matrix, the gradient-based map) live here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deco.models.projectors.base import Projector

QUERY_RULES = ("square", "divisor", "any")
RELEVANCES = ("receptive_field", "jacobian")
ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


def square_side(value: int) -> int | None:
    side = math.isqrt(value)
    return side if side * side == value else None


def allowed_query_nums(rule: str, num_patches: int) -> list[int]:
    """Every query_num `rule` accepts for `num_patches` patches (ascending)."""
    if rule == "any":
        return list(range(1, num_patches + 1))
    grid = square_side(num_patches)
    if grid is None:
        return []
    sides = range(1, grid + 1) if rule == "square" else [s for s in range(1, grid + 1) if grid % s == 0]
    return [s * s for s in sides]


def query_num_problem(name: str, rule: str, query_num, num_patches: int) -> str | None:
    """None when `query_num` fits `rule`, else one message naming the key, the value and what is allowed."""
    if rule not in QUERY_RULES:
        raise ValueError(f"query rule '{rule}' is unknown; choose one of: {', '.join(QUERY_RULES)}")
    if not isinstance(query_num, int) or isinstance(query_num, bool) or query_num < 1:
        return f"query_num={query_num!r} must be a positive integer for projector={name}"
    if rule != "any" and square_side(num_patches) is None:
        return (f"projector={name} needs a square patch grid, but the vision tower gives {num_patches} tokens "
                "(select_feature='cls_patch' adds the CLS token; use 'patch')")
    allowed = allowed_query_nums(rule, num_patches)
    if query_num in allowed:
        return None
    shown = ", ".join(str(v) for v in allowed) if len(allowed) <= 30 else f"1 .. {num_patches}"
    why = {
        "square": "is not a perfect square <= the patch count (it makes a sqrt(q) x sqrt(q) grid)",
        "divisor": f"needs sqrt(query_num) to divide the {square_side(num_patches)}-patch grid side "
                   "(an integer block / stride)",
        "any": f"exceeds the {num_patches} patches",
    }[rule]
    return f"query_num={query_num} does not fit projector={name}: it {why}; use one of: {shown}"


def build_mlp(depth: int, in_dim: int, out_dim: int, act: str = "gelu") -> nn.Sequential:
    """Linear(in, out), then (act, Linear(out, out)) x (depth - 1); children named 0, 1, 2, ... as in LLaVA."""
    if act not in ACTIVATIONS:
        raise ValueError(f"mlp_act='{act}' is unknown; choose one of: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(1, depth):
        layers += [ACTIVATIONS[act](), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def check_positive(key: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}")
    return value


def conv3x3_matrix(grid: int, stride: int = 1) -> torch.Tensor:
    """Spatial footprint of a 3x3 conv (padding 1) on a grid x grid map: (out*out) x (grid*grid), 1 per tap."""
    out = (grid - 1) // stride + 1
    mat = torch.zeros(out * out, grid * grid)
    for oy in range(out):
        for ox in range(out):
            for y in range(oy * stride - 1, oy * stride + 2):
                for x in range(ox * stride - 1, ox * stride + 2):
                    if 0 <= y < grid and 0 <= x < grid:
                        mat[oy * out + ox, y * grid + x] = 1.0
    return mat


def normalize_rows(mat: torch.Tensor) -> torch.Tensor:
    return mat / mat.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(mat.dtype).tiny)


class CompressorProjector(Projector):
    """prenorm -> pos_emb -> `mix` -> readout MLP; a subclass builds its mixing modules, then `build_readout`.

    Args:
        query_num: output tokens q (checked against the subclass's `query_rule`).
        prenorm: LayerNorm over the patch features first (Honeybee's `prenorm`).
        pos_emb: learned positional embedding added to the patches (Honeybee's `pos_emb`, trunc-normal 0.02).
    `build_readout(width, mlp_depth, mlp_act)`: an MLP of `mlp_depth` Linear layers (0: none, the mixing step
    then ends at d_out), `mlp_act` between them (gelu as LLaVA; Honeybee uses silu).
    """

    query_rule = "square"

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, prenorm: bool = False,
                 pos_emb: bool = False):
        super().__init__(in_dim, out_dim, num_patches)
        name = getattr(type(self), "config_name", type(self).__name__)
        problem = query_num_problem(name, self.query_rule, query_num, num_patches)
        if problem:
            raise ValueError(problem)
        self.query_num = query_num
        self.grid = square_side(num_patches)  # None only for rule "any" on a non-square input
        self.side = square_side(query_num)
        self.prenorm = nn.LayerNorm(in_dim) if prenorm else None
        self.pos_emb = None
        if pos_emb:
            self.pos_emb = nn.Parameter(torch.zeros(1, num_patches, in_dim))
            nn.init.trunc_normal_(self.pos_emb, mean=0.0, std=0.02)
        self.readout = None

    def build_readout(self, width: int, mlp_depth: int, mlp_act: str = "gelu") -> None:
        """The readout MLP from the mixing step's width to d_out; call at the end of the subclass __init__."""
        check_positive("mlp_depth", mlp_depth, minimum=0)
        if mlp_depth == 0 and width != self.out_dim:
            raise ValueError(f"mlp_depth=0 needs the mixing step to end at the LLM width {self.out_dim}, "
                             f"it ends at {width}")
        self.readout = build_mlp(mlp_depth, width, self.out_dim, mlp_act) if mlp_depth else None

    # -- the subclass's part ---------------------------------------------------------------------------

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q width
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------------

    def num_tokens(self) -> int:
        return self.query_num

    def embed(self, patch_feats: torch.Tensor) -> torch.Tensor:
        """The shared input stage: prenorm, then the positional embedding."""
        self._check_input(patch_feats)
        x = patch_feats
        if self.prenorm is not None:
            x = self.prenorm(x)
        if self.pos_emb is not None:
            x = x + self.pos_emb.to(x.dtype)
        return x

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        x = self.mix(self.embed(patch_feats))
        return self.readout(x) if self.readout is not None else x

    def jacobian_relevance(self, patch_feats: torch.Tensor) -> torch.Tensor:
        """Gradient-based R_q2i (b q n): row q = sum over channels of |d(sum_d y_qd) / d x_i|, rows sum to 1.

        A saliency map (captum's `Saliency` of output token q's summed value) per output token, one backward
        each; unlike a fixed receptive field it sees what gating (SE), norms and the weights actually do.
        """
        self._check_input(patch_feats)
        dtype = next(self.parameters()).dtype
        x = patch_feats.detach().to(dtype).requires_grad_(True)
        rows = []
        with torch.enable_grad():
            y = self(x)
            for q in range(y.shape[1]):
                (grad,) = torch.autograd.grad(y[:, q].sum(), x, retain_graph=q + 1 < y.shape[1])
                rows.append(grad.float().abs().sum(-1))  # b n
        return normalize_rows(torch.stack(rows, dim=1))


class ReceptiveFieldProjector(CompressorProjector):
    """A convolutional / pooling projector whose R_q2i is its receptive field or, on request, its Jacobian map.

    `relevance`: "receptive_field" (the subclass's `receptive_field()`, q n, fixed) or "jacobian"
    (`jacobian_relevance` of the features, b q n).
    """

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, prenorm: bool = False,
                 pos_emb: bool = False, relevance: str = "receptive_field"):
        if relevance not in RELEVANCES:
            raise ValueError(f"relevance='{relevance}' is unknown; choose one of: {', '.join(RELEVANCES)}")
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb)
        self.relevance = relevance

    def receptive_field(self) -> torch.Tensor:
        raise NotImplementedError

    def query_to_patch_relevance(self, patch_feats: torch.Tensor | None = None, **_) -> torch.Tensor:
        """R_q2i: `receptive_field()` (q n), or with relevance='jacobian' the gradient map of `patch_feats` (b q n)."""
        if self.relevance == "receptive_field":
            return self.receptive_field()
        if patch_feats is None:
            raise ValueError("relevance='jacobian' depends on the features: pass patch_feats (b n d)")
        return self.jacobian_relevance(patch_feats)
