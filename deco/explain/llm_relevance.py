"""The teacher-forced forward pass that every relevance method reads, and R_t2q by GAE over the LLM.

`teacher_forced_forward` runs vision tower (without autograd, R_ii = I; with `vision_maps=True` under eager
attention, keeping its attention maps in the graph for `deco.relevance.vit`) -> projector (keeping the Q-Former's attention maps) -> LLM with `output_attentions=True` and eager
attention (switched on for this forward only: SDPA returns no maps). The patch features are made leaves
that require grad, so every attention map is in the autograd graph even when all weights are frozen. The explained score is the sum of the target
tokens' logits, each read at the position that predicts it (the token before it: causal LM); gradients
come from `torch.autograd.grad`, so no parameter `.grad` is touched (safe inside a training loop).
`llm_gae_rows` turns LLM attention maps + gradients into R_t2q: GAE's self-attention rule over all LLM
layers (R = I; R += Ā R), rows of the predicting positions, columns of the q visual tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deco.relevance.gae import self_attention_relevance
from deco.explain.inputs import ExplainInput
from deco.data.tokenizer import IGNORE_INDEX
from deco.models.attention import attention
from deco.models.mllm import position_ids_from_mask


@dataclass
class ForwardTrace:
    """What one teacher-forced forward leaves for the relevance methods (batch of one)."""

    score: torch.Tensor  # scalar with graph: sum of the target tokens' logits
    token_scores: torch.Tensor  # k, with graph: each target token's logit
    log_prob: float  # sum of the target tokens' log-probabilities
    llm_attns: list[torch.Tensor]  # per LLM layer: 1 h T T
    qformer_self: list[torch.Tensor] | None  # per Q-Former layer: 1 h q q (None for other projectors)
    qformer_cross: list[torch.Tensor] | None  # per Q-Former layer: 1 h q n
    patch_feats: torch.Tensor  # 1 n d_vision (requires grad; a leaf unless vision_maps)
    image_tokens: torch.Tensor  # 1 q d_llm
    rows: torch.Tensor  # k: positions whose logits score the targets (target position - 1)
    target_ids: torch.Tensor  # k
    vis_start: int  # first visual token in the merged sequence
    num_queries: int  # q
    vision_attns: list[torch.Tensor] | None = None  # per used vision layer: 1 h 1+n 1+n (vision_maps=True)
    logits: torch.Tensor | None = None  # T V, detached: every position's next-token logits (TAM reads them)
    reduction: torch.Tensor | None = None  # pre-LLM reducer: q n weights of the patches in each kept token
    kept: torch.Tensor | None = None  # FastV: the visual tokens (0..q-1) layers >= K still see


@contextlib.contextmanager
def grad_through(module: nn.Module) -> Iterator[nn.Module]:
    """Let autograd record `module`'s frozen parameters for one forward (flags restored afterwards), so that
    maps depending only on them (a Q-Former's first query self-attention) are in the graph too; `.grad`
    is never written (gradients come from `torch.autograd.grad` of the maps)."""
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield module
    finally:
        for p in frozen:
            p.requires_grad_(False)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode (no dropout) and restore each one's flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def teacher_forced_forward(
    model: nn.Module, inp: ExplainInput, need_projector_maps: bool = True, vision_maps: bool = False
) -> ForwardTrace:
    """One forward of `inp` through `model` (an MLLM) with attention maps in the graph; call inside eval_mode.

    `vision_maps`: run the vision tower with autograd and keep its attention maps (relevance through the ViT).
    """
    device = next(model.parameters()).device
    input_ids = inp.input_ids.to(device)[None]  # 1 t
    labels = torch.where(inp.target_mask.to(device), input_ids[0], IGNORE_INDEX)[None]  # 1 t
    param = next(model.projector.parameters(), None)
    vision_attns = reduction = None
    reducer = getattr(model, "reducer", None)
    if reducer is not None and reducer.stage == "vision" and vision_maps:
        raise ValueError(
            f"vision_relevance=gae is not available with reduction={reducer.name}; use vision_relevance=none"
        )
    if reducer is not None and reducer.stage == "vision":
        from deco.models.reduction import reduce_features, vision_signals

        with torch.no_grad():
            _, mat = reduce_features(model.vision, model.projector, reducer, inp.pixel_values.to(device)[None])
            hidden = vision_signals(model.vision, inp.pixel_values.to(device)[None]).hidden
        feats = hidden.detach().to(mat.dtype).requires_grad_(True)  # 1 1+n d: [CLS] + patches, a leaf
        reduction = mat[0, :, 1:]
    elif vision_maps:
        with attention(model.vision.model, "eager"):
            feats, vision_attns = model.vision.forward_with_attentions(inp.pixel_values.to(device)[None])
        feats = feats.to(param.dtype if param is not None else feats.dtype)
    else:
        with torch.no_grad():
            feats = model.vision(inp.pixel_values.to(device)[None])  # 1 n d
        feats = feats.detach().to(param.dtype if param is not None else feats.dtype).requires_grad_(True)
    q_self = q_cross = None
    with torch.enable_grad():
        if reduction is not None:
            tokens = model.projector.forward_tokens(mat @ feats)  # 1 k d_llm
        elif need_projector_maps and hasattr(model.projector, "forward_with_attentions"):
            with grad_through(model.projector):  # a frozen Q-Former's query-only maps need a graph too
                tokens, q_self, q_cross = model.projector.forward_with_attentions(feats)
        else:
            tokens = model.projector(feats)  # 1 q d_llm
        embeds, mask, merged_labels, image_positions = model.prepare_inputs_embeds(
            input_ids, None, None, labels, image_tokens=tokens
        )
        if int(image_positions[0]) < 0:
            raise ValueError("the input has no <image> placeholder: nothing visual to explain")
        with attention(model.llm, "eager"), _fastv_mask(model, embeds, mask, merged_labels, image_positions) as kept:
            out = model.llm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
                output_attentions=True,
            )
        attns = list(out.attentions or [])
        if not attns or any(a is None for a in attns):
            raise RuntimeError("the LLM returned no attention maps; it must use attn_implementation='eager'")
        positions = (merged_labels[0] != IGNORE_INDEX).nonzero().flatten()  # k
        if positions.numel() == 0 or int(positions[0]) == 0:
            raise ValueError("no target token to explain (or a target at position 0, which nothing predicts)")
        rows = positions - 1
        target_ids = merged_labels[0, positions]
        logits = out.logits[0, rows].float()  # k V
        token_scores = logits.gather(1, target_ids[:, None])[:, 0]  # k
        log_prob = float(torch.log_softmax(logits.detach(), dim=1).gather(1, target_ids[:, None]).sum())  # k V
    return ForwardTrace(
        score=token_scores.sum(),
        token_scores=token_scores,
        log_prob=log_prob,
        llm_attns=attns,
        qformer_self=q_self,
        qformer_cross=q_cross,
        patch_feats=feats,
        image_tokens=tokens,
        rows=rows,
        target_ids=target_ids,
        vis_start=int(image_positions[0]),
        num_queries=tokens.shape[1],
        vision_attns=vision_attns,
        logits=out.logits[0].detach(),
        reduction=reduction,
        kept=kept,
    )


@contextlib.contextmanager
def _fastv_mask(model: nn.Module, embeds, mask, labels, image_positions):
    """Under FastV: the kept visual tokens (chosen by the prompt's last token, as in generation: the reducer's own
    `chooser` on `ranking_attention` of the prompt) and, for the block, layers >= K with the dropped ones masked
    out of every key. With the original positions kept this is the pruned forward for every kept token, and the
    attention maps GAE reads stay T x T. Yields None otherwise."""
    reducer = getattr(model, "reducer", None)
    if reducer is None or reducer.stage != "llm":
        yield None
        return
    from deco.models.reduction.llm_runner import ranking_attention

    prompt_len = int((labels[0] != IGNORE_INDEX).nonzero().flatten()[0])  # the first target token
    start, q = int(image_positions[0]), model.projector.num_tokens()
    prompt_mask = mask[:, :prompt_len]
    with torch.no_grad():
        _, attn = ranking_attention(model.llm, embeds[:, :prompt_len].detach(), prompt_mask, reducer.layer)
    keep = torch.zeros(embeds.shape[1], dtype=torch.bool, device=embeds.device)
    keep[reducer.chooser(prompt_mask, image_positions, q)(attn)[0]] = True  # every prompt text token + the best
    keep[prompt_len:] = True  # the target tokens
    kept = keep[start : start + q].nonzero().flatten()
    columns = (~keep).nonzero().flatten()

    def hide(_module, args, kwargs):
        m = kwargs["attention_mask"].clone()  # eager attention: the additive float mask
        m[..., columns] = torch.finfo(m.dtype).min
        kwargs["attention_mask"] = m
        return args, kwargs

    layers = model.llm.get_base_model().model.layers if hasattr(model.llm, "get_base_model") else model.llm.model.layers
    hooks = [layers[i].register_forward_pre_hook(hide, with_kwargs=True) for i in range(reducer.layer, len(layers))]
    try:
        yield kept
    finally:
        for hook in hooks:
            hook.remove()


def gradients(score: torch.Tensor, tensors: Sequence[torch.Tensor], retain_graph: bool = True) -> list[torch.Tensor]:
    """d score / d tensor for each tensor (zeros where the score does not depend on it)."""
    grads = torch.autograd.grad(score, list(tensors), retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def llm_gae_rows(
    trace: ForwardTrace, llm_grads: Sequence[torch.Tensor], rows: torch.Tensor | None = None
) -> torch.Tensor:
    """R_t2q rows (k q; q for one row index): GAE relevance of the LLM at the predicting `rows` (default
    trace.rows) over the visual tokens."""
    rel = self_attention_relevance(trace.llm_attns, llm_grads)[0]  # T T
    rows = trace.rows if rows is None else rows
    return rel[rows, trace.vis_start : trace.vis_start + trace.num_queries]
