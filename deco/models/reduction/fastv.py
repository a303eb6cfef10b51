"""FastV (Chen et al., ECCV 2024; pkunlp-icler/FastV, `fastv_kvcache.py` / `modeling_llama.py`).

After LLM layer K (`layer`, the authors' K=2 for 32-layer Vicuna; K must leave at least one layer after it),
the image tokens are ranked by the attention the prompt's **last token** pays them in layer K-1, averaged over
heads (`last_attention.mean(dim=1)[0][-1][image span]`); the `keep` best stay (their `topk(int(576 * ratio))`),
every text token stays, the kept indices are sorted, and layers K..L-1 see only those tokens with their
original position ids (`position_ids = keep_indexs`). Prefill only: decode steps attend to what the prefill
left in each layer's cache (deco.models.reduction.llm_runner).
"""

from __future__ import annotations

import torch

from deco.models.reduction.base import Reducer, ReductionConfigError, register_reducer


def fastv_keep_columns(attn: torch.Tensor, mask: torch.Tensor, vis_start: torch.Tensor, num_visual: int,
                       keep: int) -> list[torch.Tensor]:
    """Per row: sorted columns to keep (every attended text column + the `keep` most attended visual ones).

    attn: b T last-token attention; mask: b T (1 = token); vis_start: b (first visual column, -1 = no image).
    """
    cols = []
    for i in range(attn.shape[0]):
        present = mask[i].bool().clone()
        start = int(vis_start[i])
        if start >= 0:
            span = slice(start, start + num_visual)
            top = attn[i, span].topk(keep).indices + start
            present[span] = False
            present[top] = True
        cols.append(present.nonzero().flatten())
    return cols


@register_reducer("fastv")
class FastV(Reducer):
    stage = "llm"
    knobs = ("layer",)

    def __init__(self, keep: int, layer: int = 2):
        super().__init__(keep)
        self.layer = layer

    def check_static(self) -> None:
        super().check_static()
        if self.layer < 1:
            raise ReductionConfigError(f"reduction.layer={self.layer} must be >= 1 (tokens drop after layer K)")

    def check(self, num_patches: int, llm_layers: int | None = None) -> None:
        super().check(num_patches, llm_layers)
        if llm_layers is not None and not 1 <= self.layer < llm_layers:
            raise ReductionConfigError(
                f"reduction.layer={self.layer} must be between 1 and {llm_layers - 1} for a {llm_layers}-layer LLM "
                "(tokens are dropped after layer K, ranked by layer K-1's attention)")

    def chooser(self, mask: torch.Tensor, vis_start: torch.Tensor, num_visual: int):
        return lambda attn: fastv_keep_columns(attn, mask, vis_start, num_visual, self.keep)
