"""Relevance methods for an MLLM: R-GAE (DeCo) and the baselines, all in R_t2i = R_t2q x R_q2i form.

Every method returns a `Relevance`: R_t2q (target text -> the projector's q output tokens, measured in the
LLM), R_q2i (each output token -> the n image patches, measured in the projector) and their product
R_t2i, reshaped to the patch grid. Methods (`METHODS`):

* `rgae`: GAE over all LLM layers (R_t2q); R_q2i by the projector's own rule: avg pooling weights,
  identity for linear/MLP, max-pool argmax shares, GAE over the Q-Former's self+cross attention with
  gradients from the same backward.
* `rawattn`: last LLM layer's head-mean attention from the predicting positions to the visual tokens;
  R_q2i without gradients (Q-Former: last cross-attention, head mean).
* `gradcam`: Chefer's attention Grad-CAM on the last LLM layer (and the Q-Former's last cross-attention).
* `ig`: captum IntegratedGradients of the target score w.r.t. the projector's output tokens (zero
  baseline; attribution summed over the width, absolute value), R_q2i as for rawattn; the score is
  the sum over target tokens, so its per-token rows hold the single summed row.

R_t2q rows are per target token (`per_token=True`: one backward per token; default: one backward of
the summed score, rows read at each token's predicting position); R_t2q is their sum.

`vision_relevance` says where the image side of the chain ends: `none` (R_ii = I, maps over the n patch
features the projector reads) or `gae` (through the vision tower: R_q2i <- R_q2i @ R_f2i with R_f2i
from GAE's self-attention rule over the CLIP layers up to `select_layer`, rows normalised so the totals
of R_q2i and R_t2i are unchanged; see `deco.relevance.vit`). R_f2i comes from the gradients of the summed
target score for every method, so per-token rows share one R_f2i.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deco.relevance.gae import attn_gradcam, raw_attention
from deco.relevance.vit import VISION_RELEVANCE, feature_to_patch_relevance
from deco.explain.inputs import ExplainInput
from deco.explain.llm_relevance import ForwardTrace, eval_mode, gradients, llm_gae_rows, teacher_forced_forward
from deco.models.mllm import position_ids_from_mask
from deco.data.tokenizer import IGNORE_INDEX


@dataclass
class Relevance:
    method: str
    r_t2q: torch.Tensor  # q
    r_q2i: torch.Tensor  # q n
    r_t2q_tokens: torch.Tensor  # k q (one row per target token; 1 q for methods without per-token rows)
    target_tokens: list[str]
    score: float  # sum of the target tokens' logits
    log_prob: float  # sum of their log-probabilities
    vision_relevance: str = "none"  # none: r_q2i over the patch features; gae: over the input patches
    kept: torch.Tensor | None = None  # FastV: visual tokens the layers after K still see (others: early layers only)
    spatial_queries: bool = True  # the q tokens keep the patch layout (False: learned queries, drawn as a ranked strip)
    direct_t2i: torch.Tensor | None = None  # g g: a map measured on the image itself (perturb), not R_t2q R_q2i

    @property
    def num_queries(self) -> int:
        return self.r_t2q.shape[0]

    @property
    def grid(self) -> int:
        n = self.r_q2i.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patches do not form a square grid (a CLS column? use select_feature='patch')")
        return side

    @property
    def r_t2i(self) -> torch.Tensor:
        """grid x grid text-to-patch relevance = R_t2q @ R_q2i (or the directly measured map)."""
        if self.direct_t2i is not None:
            return self.direct_t2i
        return (self.r_t2q @ self.r_q2i).reshape(self.grid, self.grid)

    @property
    def r_t2i_tokens(self) -> torch.Tensor:
        """k x grid x grid, one map per target token."""
        if self.direct_t2i is not None:
            return self.direct_t2i[None]
        return (self.r_t2q_tokens @ self.r_q2i).reshape(-1, self.grid, self.grid)


def _squeeze(rel: torch.Tensor) -> torch.Tensor:
    return rel[0] if rel.dim() == 3 else rel


def structural_q2i(projector: nn.Module, trace: ForwardTrace) -> torch.Tensor:
    """R_q2i that needs no gradients (q n): pooling weights / identity / max-pool shares / Q-Former raw cross-attention."""
    if trace.qformer_cross is not None:
        return _squeeze(projector.query_to_patch_relevance(cross_attns=trace.qformer_cross)).float()
    return _squeeze(projector.query_to_patch_relevance(patch_feats=trace.patch_feats.detach())).float()


def _qformer_maps(trace: ForwardTrace) -> list[torch.Tensor]:
    return [*(trace.qformer_self or []), *(trace.qformer_cross or [])]


def _finish(method: str, trace: ForwardTrace, rows: torch.Tensor, r_q2i: torch.Tensor, tokens: list[str]) -> Relevance:
    rows = rows.detach().float().cpu()
    return Relevance(
        method=method,
        r_t2q=rows.sum(0),
        r_q2i=r_q2i.detach().float().cpu(),
        r_t2q_tokens=rows,
        target_tokens=tokens,
        score=float(trace.score.detach()),
        log_prob=trace.log_prob,
    )


def rgae(model: nn.Module, trace: ForwardTrace, tokens: list[str], per_token: bool, **_) -> Relevance:
    q_maps = _qformer_maps(trace)
    grads = gradients(trace.score, [*trace.llm_attns, *q_maps])
    n_llm = len(trace.llm_attns)
    llm_grads, q_grads = grads[:n_llm], grads[n_llm:]
    if per_token:
        rows = []
        for j in range(trace.token_scores.shape[0]):
            token_grads = gradients(trace.token_scores[j], trace.llm_attns)
            rows.append(llm_gae_rows(trace, token_grads, trace.rows[j]))
        rows = torch.stack(rows)  # k q
    else:
        rows = llm_gae_rows(trace, llm_grads)  # k q
    if trace.qformer_cross is not None:
        n_layers = len(trace.qformer_self)
        r_q2i = _squeeze(
            model.projector.query_to_patch_relevance(
                self_attns=trace.qformer_self,
                cross_attns=trace.qformer_cross,
                self_grads=q_grads[:n_layers],
                cross_grads=q_grads[n_layers:],
            )
        )
    else:
        r_q2i = structural_q2i(model.projector, trace)
    return _finish("rgae", trace, rows, r_q2i, tokens)


def _visual_rows(trace: ForwardTrace, cam: torch.Tensor) -> torch.Tensor:  # 1 T T -> k q
    return cam[0][trace.rows, trace.vis_start : trace.vis_start + trace.num_queries]


def rawattn(model: nn.Module, trace: ForwardTrace, tokens: list[str], **_) -> Relevance:
    *_, last = trace.llm_attns  # the last LLM layer
    rows = _visual_rows(trace, raw_attention(last))
    return _finish("rawattn", trace, rows, structural_q2i(model.projector, trace), tokens)


def gradcam(model: nn.Module, trace: ForwardTrace, tokens: list[str], per_token: bool, **_) -> Relevance:
    *_, last = trace.llm_attns  # the last LLM layer (and the Q-Former's last cross-attention)
    extra = []
    if trace.qformer_cross is not None:
        *_, cross = trace.qformer_cross
        extra = [cross]
    grads = gradients(trace.score, [last, *extra])
    if per_token:
        rows = torch.stack(
            [
                _visual_rows(trace, attn_gradcam(last, gradients(trace.token_scores[j], [last])[0]))[j]
                for j in range(trace.token_scores.shape[0])
            ]
        )
    else:
        rows = _visual_rows(trace, attn_gradcam(last, grads[0]))
    if extra:
        r_q2i = _squeeze(attn_gradcam(extra[0], grads[1]))
    else:
        r_q2i = structural_q2i(model.projector, trace)
    return _finish("gradcam", trace, rows, r_q2i, tokens)


def integrated_gradients(
    model: nn.Module, trace: ForwardTrace, tokens: list[str], inp: ExplainInput, ig_steps: int, **_
) -> Relevance:
    from captum.attr import IntegratedGradients

    device = trace.image_tokens.device
    input_ids = inp.input_ids.to(device)[None]
    labels = torch.where(inp.target_mask.to(device), input_ids[0], IGNORE_INDEX)[None]

    def target_score(image_tokens: torch.Tensor) -> torch.Tensor:  # B q d -> B
        batch = image_tokens.shape[0]
        embeds, mask, _, _ = model.prepare_inputs_embeds(
            input_ids.expand(batch, -1), None, None, labels.expand(batch, -1), image_tokens=image_tokens
        )
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        return logits[:, trace.rows, trace.target_ids].float().sum(1)  # B k -> B

    tokens_in = trace.image_tokens.detach()
    with torch.enable_grad():
        attr = IntegratedGradients(target_score).attribute(
            tokens_in, baselines=torch.zeros_like(tokens_in), n_steps=ig_steps, internal_batch_size=ig_steps
        )  # 1 q d
    rows = attr.sum(-1).abs()  # 1 q: IG attributions are signed; saliency shows their size
    return _finish("ig", trace, rows, structural_q2i(model.projector, trace), ["".join(tokens)])


IG_STEPS = 16  # integration steps of `ig` unless the caller names its own (explain, explain_all, mode=score)

METHODS: dict[str, Callable[..., Relevance]] = {
    "rgae": rgae,
    "rawattn": rawattn,
    "gradcam": gradcam,
    "ig": integrated_gradients,
}


def _register_recent() -> None:
    from deco.explain.recent_methods import RECENT_METHODS

    METHODS.update(RECENT_METHODS)


_register_recent()


def _tokens(inp: ExplainInput, tokenizer) -> list[str]:
    if tokenizer is not None:
        return inp.target_tokens(tokenizer)
    return [str(i) for i in inp.input_ids[inp.target_mask].tolist()]


def through_vision(model: nn.Module, trace: ForwardTrace, results: dict[str, Relevance]) -> dict[str, Relevance]:
    """Carry every result's R_q2i from the patch features to the input patches (R_q2i @ R_f2i)."""
    grads = gradients(trace.score, trace.vision_attns)
    cls_feature = getattr(model.vision, "select_feature", "patch") == "cls_patch"
    r_f2i = feature_to_patch_relevance(trace.vision_attns, grads, cls_feature)[0].float().cpu()  # features n
    for rel in results.values():
        rel.r_q2i = rel.r_q2i @ r_f2i
        rel.vision_relevance = "gae"
    return results


def explain_all(
    model: nn.Module,
    inp: ExplainInput,
    methods: list[str],
    tokenizer=None,
    per_token: bool = False,
    ig_steps: int = IG_STEPS,
    vision_relevance: str = "none",
) -> dict[str, Relevance]:
    """Several methods from one shared forward pass (IG runs its own forwards); the model's flags are restored."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose among: {', '.join(METHODS)}")
    if vision_relevance not in VISION_RELEVANCE:
        raise ValueError(
            f"vision_relevance='{vision_relevance}' is unknown; choose one of: {', '.join(VISION_RELEVANCE)}"
        )
    tokens = _tokens(inp, tokenizer)
    with eval_mode(model):
        trace = teacher_forced_forward(model, inp, need_projector_maps=True, vision_maps=vision_relevance == "gae")
        results = {
            m: METHODS[m](model, trace, tokens, per_token=per_token, inp=inp, ig_steps=ig_steps, tokenizer=tokenizer)
            for m in methods
        }
        for rel in results.values():
            rel.spatial_queries = bool(model.projector.spatial_tokens)  # every Projector says
            if trace.reduction is not None:  # kept / merged tokens back to the patches they carry
                rel.r_q2i = trace.reduction.detach().float().cpu()
            if trace.kept is not None:
                rel.kept = trace.kept.cpu()
            if trace.reduction is not None and model.reducer.name != "pool":
                rel.spatial_queries = False  # kept / merged tokens no longer tile the grid
        return through_vision(model, trace, results) if vision_relevance == "gae" else results


def explain(
    model: nn.Module,
    inp: ExplainInput,
    method: str = "rgae",
    tokenizer=None,
    per_token: bool = False,
    ig_steps: int = IG_STEPS,
    vision_relevance: str = "none",
) -> Relevance:
    """Relevance of `inp`'s target text for one method (see METHODS); the model's train/eval flags are restored."""
    if method not in METHODS:
        raise ValueError(f"method='{method}' is unknown; choose one of: {', '.join(METHODS)}")
    return explain_all(model, inp, [method], tokenizer, per_token, ig_steps, vision_relevance)[method]
