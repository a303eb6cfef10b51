"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers",
ICML 2024) for deco's LLM, written natively (no `lxt`): rules transcribed from the paper, run as
gradient x input with a modified backward.

Relevance starts at the explained logits (R = z) and is carried back layer by layer. Written as
gradient x input, every tensor x holds R_x = x * g_x, where g_x is a "modified gradient"; each rule becomes a
change of one operation's backward:

* linear layers (every `nn.Linear` of the LLM, lm_head included): the epsilon rule
  R_in_i = sum_j x_i W_ji R_j / (z_j + eps sign z_j), i.e. the incoming gradient is scaled by
  z / (z + eps sign z) at the layer's output (`EpsilonGrad`); eps = 0 is plain gradient x input (LRP-0);
* elementwise nonlinearities (the MLP's SiLU / GELU): the identity rule R_in = R_out, i.e. the backward is
  g_in = g_out * act(x) / x (`IdentityRule`, x stabilised away from 0);
* normalisation (RMSNorm, LayerNorm): the identity rule, the 1 / std treated as a constant (detached), so the
  layer is a diagonal linear map without bias and R_in = R_out;
* bilinear products split relevance 50/50 between their factors (the uniform rule): the SwiGLU gate * up
  product halves the gradient at its output (`HalfGrad`); in attention, A V halves the gradient reaching V
  and A, and Q K^T halves again what reaches Q and K through the softmax: the gradient at the q_proj / k_proj
  outputs is divided by 4, at v_proj by 2 (the softmax's backward and RoPE are linear in the incoming
  gradient, so the factor commutes to the projection outputs; this also covers grouped-query heads);
* softmax: the paper's rule R_in_i = x_i (R_out_i - s_i sum_j R_out_j), a linearisation at the input logits.
  With R_out = s * g, x_i (s_i g_i - s_i sum_j s_j g_j) is x_i times softmax's own backward: the plain
  gradient already implements it, so softmax is left untouched (and any attention implementation works).
  The rule is not conservative: it leaks sum_j R_out_j - sum_i R_in_i, the part its shift-invariance assigns
  to a bias (the paper's bias-absorption term).

`attnlrp_rules(llm)` installs these for one forward + backward (forwards of the norm and MLP instances replaced,
hooks on the linear layers; all restored on exit). `attnlrp` is the `method=attnlrp` of deco.explain: one
teacher-forced forward under the rules, one backward of the summed target logits, relevance = image tokens x
gradient summed over the width (R_t2q), R_q2i by the projector's structural rule as for `rawattn`.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.autograd import Function

EPSILON = 1e-6  # the epsilon rule's stabiliser on every linear layer of the LLM
_SAFE = 1e-12  # keeps act(x) / x finite at x = 0 (the identity rule's only stabiliser)


def stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z), with sign(0) = +1 (LRP's epsilon stabiliser: never crosses or touches 0 for eps > 0)."""
    return torch.where(z >= 0, z + eps, z - eps)


class EpsilonGrad(Function):
    """Identity forward; backward scales the gradient by z / (z + eps sign z) (the epsilon rule at a layer's output z)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z / stabilise(z, eps))
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class ScaleGrad(Function):
    """Identity forward; backward divides the gradient by `factor` (the uniform rule's split)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad / ctx.factor, None


class IdentityRule(Function):
    """y = fn(x) with backward g_in = g_out * y / x: x * g_in = y * g_out, i.e. R_in = R_out (the identity rule)."""

    @staticmethod
    def forward(ctx, fn, x: torch.Tensor) -> torch.Tensor:
        y = fn(x)
        ctx.save_for_backward(y / stabilise(x, _SAFE))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return None, grad * ratio


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # float32 at least, float64 stays float64


def rms_norm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with the 1 / rms treated as a constant (identity rule)."""
    h = x.to(_compute_dtype(x))
    inv = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon).detach()
    return self.weight * (h * inv).to(x.dtype)


def layer_norm_forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with the 1 / std treated as a constant (the centring stays: a linear map without bias)."""
    h = x.to(_compute_dtype(x))
    centred = h - h.mean(-1, keepdim=True)
    inv = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps).detach()
    y = (centred * inv).to(x.dtype)
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """down(act(gate(x)) * up(x)): identity rule on act, the product's relevance split 50/50."""
    gated = IdentityRule.apply(self.act_fn, self.gate_proj(x)) * self.up_proj(x)
    return self.down_proj(ScaleGrad.apply(gated, 2.0))


def _is_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")


def _is_gated_mlp(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ in ("torch.nn.modules.activation", "transformers.activations")


def _is_attention(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))


def _scale_output(factor: float):
    def hook(_module, _args, output):
        return ScaleGrad.apply(output, factor)

    return hook


def _epsilon_output(eps: float):
    def hook(_module, _args, output):
        return EpsilonGrad.apply(output, eps)

    return hook


@contextlib.contextmanager
def attnlrp_rules(llm: nn.Module, epsilon: float = EPSILON) -> Iterator[nn.Module]:
    """Install AttnLRP's rules in `llm` (a Llama-family causal LM, LoRA-wrapped or not) for the duration.

    Raises ValueError (naming the module) for a normalisation layer or nonlinearity it has no rule for, and when
    the LLM has no Llama-style attention (q/k/v/o projections) or gated MLP (gate/up/down projections)."""
    if epsilon < 0:
        raise ValueError(f"attnlrp epsilon={epsilon} must be >= 0")
    forwards: list[tuple[nn.Module, object]] = []
    hooks = []
    attentions = mlps = 0
    for name, module in llm.named_modules():
        if _is_rms_norm(module):
            forwards.append((module, rms_norm_forward))
        elif isinstance(module, nn.LayerNorm):
            forwards.append((module, layer_norm_forward))
        elif "norm" in type(module).__name__.lower():
            raise ValueError(f"attnlrp has no rule for the normalisation layer {name} ({type(module).__name__})")
        elif _is_gated_mlp(module):
            forwards.append((module, gated_mlp_forward))
            mlps += 1
        elif _is_attention(module):
            attentions += 1
        elif _is_activation(module) and not any(m.act_fn is module for m, _ in forwards if _is_gated_mlp(m)):
            raise ValueError(
                f"attnlrp has no rule for the nonlinearity {name} ({type(module).__name__}) outside a gated MLP"
            )
    if not attentions or not mlps:
        raise ValueError(
            f"attnlrp needs a Llama-style LLM (attention with q/k/v/o_proj and a gated MLP with gate/up/down_proj); "
            f"{type(llm).__name__} has {attentions} attention and {mlps} gated MLP modules"
        )
    try:
        for module, forward in forwards:
            module.forward = types.MethodType(forward, module)  # an instance attribute: nn.Module.__call__ uses it
        for module in llm.modules():
            if _is_attention(module):
                hooks.append(module.q_proj.register_forward_hook(_scale_output(4.0)))
                hooks.append(module.k_proj.register_forward_hook(_scale_output(4.0)))
                hooks.append(module.v_proj.register_forward_hook(_scale_output(2.0)))
            if isinstance(module, nn.Linear) and epsilon > 0:
                hooks.append(module.register_forward_hook(_epsilon_output(epsilon)))
        yield llm
    finally:
        for hook in hooks:
            hook.remove()
        for module, _ in forwards:
            module.__dict__.pop("forward", None)


def input_times_gradient(score: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Relevance per input vector: (inputs * d score / d inputs) summed over the last dim; no `.grad` is written."""
    (grad,) = torch.autograd.grad(score, [inputs], allow_unused=True)
    if grad is None:
        return torch.zeros(inputs.shape[:-1], dtype=inputs.dtype, device=inputs.device)
    return (inputs.detach() * grad).sum(-1)


def attnlrp(model: nn.Module, trace, tokens: list[str], inp=None, **_):
    """`method=attnlrp`: R_t2q = AttnLRP relevance of the summed target logits at the visual tokens (1 q)."""
    from deco.explain.llm_relevance import teacher_forced_forward
    from deco.explain.methods import _finish, structural_q2i

    if inp is None:
        raise ValueError("method 'attnlrp' reruns the forward under its rules: it needs the input")
    with attnlrp_rules(model.llm):
        rerun = teacher_forced_forward(model, inp, need_projector_maps=False)
        rows = input_times_gradient(rerun.score, rerun.image_tokens)  # 1 q
    return _finish("attnlrp", trace, rows, structural_q2i(model.projector, trace), ["".join(tokens)])
