"""The field's recent relevance methods, in deco's R_t2i = R_t2q x R_q2i form (transcribed rules, not code).

* `relatt` -- relative attention (Zhang, Khayatkhoei, Chhikara & Ilievski, "MLLMs know where to look",
  ICLR 2025): the answer's attention to the visual tokens under the asked question divided by its attention
  under a generic one (`GENERIC_QUESTION`, the paper's), which cancels the image's question-independent
  attention sinks. Attention = head mean, then mean over all LLM layers (the paper picks one layer per model;
  the mean needs no per-model choice), read at each target token's predicting position.
* `tam` -- Token Activation Map (Li, Wang, Ding, Wang & Li, ICCV 2025, xmed-lab/TAM): gradient-free. The map
  of target token t (class c_t) is ReLU(logit of c_t at every visual position) (a logit lens on the last
  layer). Estimated causal inference removes what earlier text explains: each earlier text token j (the
  prompt after the image and the earlier answer tokens, minus copies of c_t) has its own map A_j (its own
  class), weighted by w_j = ReLU(logit of c_t at j) / sum; the interference I = sum_j w_j A_j is subtracted
  with the least-squares scale s = <A_t, I> / <I, I>: A = ReLU(A_t - s I). Then the rank Gaussian filter
  (3 x 3, `rank_gaussian_filter`) on token grids; learned queries (no layout) are not filtered.
* `perturb` -- perturbation attribution with captum's `FeatureAblation` over groups of image patches
  (`PERTURB_GROUP` x `PERTURB_GROUP` patches, set to the mean colour = 0 after normalisation): a group's
  relevance is the drop of the target's summed log-probability when it is removed. The map is measured on
  the image (`Relevance.direct_t2i`); R_t2q is each token's R_q2i-weighted mean of the positive drops over
  the patches it reads, so token-level protocols (the causal test) apply to it too.
* `attnlrp` -- AttnLRP (Achtibat et al., ICML 2024), written natively in `deco.explain.attnlrp` (no `lxt`).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from deco.explain.attnlrp import attnlrp
from deco.explain.inputs import with_question
from deco.explain.llm_relevance import ForwardTrace, teacher_forced_forward
from deco.explain.methods import Relevance, _finish, structural_q2i
from deco.models.mllm import position_ids_from_mask

log = logging.getLogger(__name__)
GENERIC_QUESTION = "Write a general description of the image."
PERTURB_GROUP = 4  # patches per side of one ablated group (24 x 24 patches -> 6 x 6 groups)


def _mean_attention_rows(trace: ForwardTrace) -> torch.Tensor:
    """k q: head- and layer-mean attention from the predicting rows to the visual tokens."""
    mean = torch.stack([a.detach()[0].float().mean(0) for a in trace.llm_attns]).mean(0)  # T T
    return mean[trace.rows, trace.vis_start : trace.vis_start + trace.num_queries]


def relatt(model: nn.Module, trace: ForwardTrace, tokens: list[str], inp=None, tokenizer=None, **_) -> Relevance:
    if tokenizer is None or inp is None:
        raise ValueError("method 'relatt' re-asks the image with a generic question: it needs the tokenizer")
    generic = teacher_forced_forward(model, with_question(inp, tokenizer, GENERIC_QUESTION), need_projector_maps=False)
    asked, base = _mean_attention_rows(trace), _mean_attention_rows(generic)
    if inp.question is None:
        log.warning("relatt: the plain template has no question, so the ratio is 1 everywhere")
    rows = asked / base.clamp(min=torch.finfo(base.dtype).tiny)
    return _finish("relatt", trace, rows, structural_q2i(model.projector, trace), tokens)


def rank_gaussian_filter(img: torch.Tensor, size: int = 3) -> torch.Tensor:
    """TAM's denoiser (h w): per cell, the values of its size x size window (reflected at the edges) sorted,
    averaged with Gaussian weights over their rank (centred on the median rank, sigma = std / mean of the
    window, i.e. its coefficient of variation); 0 where the window's mean is <= 0, the mean where it is flat."""
    pad = size // 2
    windows = F.unfold(F.pad(img.double()[None, None], (pad,) * 4, mode="reflect"), size)[0].T  # hw, size^2
    ranked = windows.sort(-1).values
    mean, std = ranked.mean(-1, keepdim=True), ranked.std(-1, unbiased=False, keepdim=True)
    offset = torch.arange(size * size, dtype=torch.float64) - (size * size) // 2
    sigma = std / mean.clamp(min=torch.finfo(torch.float64).tiny)
    kernel = torch.exp(-(offset**2) / (2 * sigma.clamp(min=torch.finfo(torch.float64).tiny) ** 2))
    value = (ranked * kernel).sum(-1) / kernel.sum(-1)
    value = torch.where(std[:, 0] > 0, value, mean[:, 0])
    return torch.where(mean[:, 0] > 0, value, 0.0).reshape(img.shape).to(img.dtype)


def _merged_ids(trace: ForwardTrace, inp) -> torch.Tensor:
    """T: the token id at every position of the merged sequence (-1 at the visual tokens)."""
    ids = inp.input_ids.to(trace.logits.device)
    visual = torch.full((trace.num_queries,), -1, dtype=ids.dtype, device=ids.device)
    return torch.cat([ids[: trace.vis_start], visual, ids[trace.vis_start + 1 :]])


def tam_rows(trace: ForwardTrace, inp, spatial: bool) -> torch.Tensor:
    """k q: TAM's map of every target token over the visual tokens (see the module docstring)."""
    logits = trace.logits.float()
    start, end = trace.vis_start, trace.vis_start + trace.num_queries
    ids = _merged_ids(trace, inp)
    side = math.isqrt(trace.num_queries)
    rows = []
    for row, cls in zip(trace.rows.tolist(), trace.target_ids.tolist()):
        own = logits[start:end, cls].clamp(min=0)  # q
        earlier = [p for p in range(end, row + 1) if int(ids[p]) != cls]
        weights = logits[earlier, cls].clamp(min=0)
        weights = weights / (weights.sum() + 1e-8)
        maps = logits[start:end][:, ids[earlier]].clamp(min=0)  # q x earlier
        interference = maps @ weights
        norm = float(interference @ interference)
        scale = float(own @ interference) / norm if norm > 0 else 0.0
        cam = (own - scale * interference).clamp(min=0)
        if spatial and side * side == cam.numel() and side >= 2:
            cam = rank_gaussian_filter(cam.reshape(side, side)).flatten()
        rows.append(cam)
    return torch.stack(rows)


def tam(model: nn.Module, trace: ForwardTrace, tokens: list[str], inp=None, **_) -> Relevance:
    if inp is None or trace.logits is None:
        raise ValueError("method 'tam' reads the forward's logits and the input ids")
    rows = tam_rows(trace, inp, bool(getattr(model.projector, "spatial_tokens", True)))
    return _finish("tam", trace, rows, structural_q2i(model.projector, trace), tokens)


def _summed_log_prob(model: nn.Module, inp, trace: ForwardTrace):
    device = trace.image_tokens.device
    input_ids = inp.input_ids.to(device)[None]

    def score(pixel_values: torch.Tensor) -> torch.Tensor:  # B 3 S S -> B
        b = pixel_values.shape[0]
        embeds, mask, _, _ = model.prepare_inputs_embeds(input_ids.expand(b, -1), None, pixel_values, None)
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = torch.log_softmax(logits[:, trace.rows].float(), dim=-1)  # B k V
        return logp.gather(2, trace.target_ids.expand(b, -1)[..., None])[..., 0].sum(-1)

    return score


def patch_groups(size: int, grid: int, group: int) -> torch.Tensor:
    """1 1 S S long: the id of the group of `group` x `group` patches (of a `grid` x `grid` patch grid) of each pixel."""
    per_side = math.ceil(grid / group)
    patch = torch.arange(size) * grid // size  # pixel -> patch row/column
    cells = patch // group
    return (cells[:, None] * per_side + cells[None, :])[None, None]


def perturb(model: nn.Module, trace: ForwardTrace, tokens: list[str], inp=None, **_) -> Relevance:
    from captum.attr import FeatureAblation

    r_q2i = structural_q2i(model.projector, trace)
    grid = math.isqrt(r_q2i.shape[1])
    pixels = inp.pixel_values.to(trace.image_tokens.device, trace.image_tokens.dtype)[None]
    groups = patch_groups(pixels.shape[-1], grid, PERTURB_GROUP).to(pixels.device)
    with torch.no_grad():
        attr = FeatureAblation(_summed_log_prob(model, inp, trace)).attribute(
            pixels, baselines=0.0, feature_mask=groups.expand_as(pixels), perturbations_per_eval=8
        )
    # every pixel of a group carries the group's attribution: read one pixel per patch
    step = pixels.shape[-1] / grid
    centres = (torch.arange(grid) * step + step / 2).long()
    direct = attr[0, 0][centres][:, centres].detach().float().cpu()  # g g
    weights = (r_q2i if trace.reduction is None else trace.reduction).detach().float().cpu()  # tokens the LLM reads
    rows = (weights @ direct.flatten().clamp(min=0) / weights.sum(1).clamp(min=1e-12))[None]  # 1 q
    rel = _finish("perturb", trace, rows, r_q2i, ["".join(tokens)])
    rel.direct_t2i = direct
    return rel


RECENT_METHODS = {"relatt": relatt, "tam": tam, "perturb": perturb, "attnlrp": attnlrp}
