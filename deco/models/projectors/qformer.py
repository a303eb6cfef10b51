"""Q-Former projector (BLIP-2 style), the compressive baseline DeCo compares against.

`query_num` learned queries pass through `layer_num` BERT-style layers of `transformers.Blip2QFormerModel`;
each layer self-attends among the queries and cross-attends to the patch features in **every** layer
(`cross_attention_frequency=1`, see DESIGN.md), then a Linear maps the query width to the LLM width.
Its query-to-patch relevance is GAE (Chefer, Gur & Wolf, ICCV 2021) over the self- and cross-attention
maps, which `forward_with_attentions` exposes so explanation code can retain their gradients.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from deco.models.projectors.attentive import gae_query_to_patch
from deco.models.projectors.base import Projector, register_projector


def _default_heads(hidden: int) -> int:
    """Heads of width ~64 (BERT's choice), the largest count that divides `hidden`."""
    for heads in range(max(1, hidden // 64), 0, -1):
        if hidden % heads == 0:
            return heads
    return 1


@register_projector("qformer")
class QFormerProjector(Projector):
    """Learned queries + Blip2QFormerModel (cross-attention in every layer) + Linear to the LLM width.

    Args:
        query_num: number of learned queries (= output tokens).
        layer_num: Q-Former layers.
        hidden_size: Q-Former width (default: the vision width `in_dim`).
        num_attention_heads: default: the largest count <= hidden_size // 64 that divides it.
        dropout: hidden and attention-probability dropout (BLIP-2 uses 0.1).
    """

    spatial_tokens = False  # learned queries: no layout on the image

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_patches: int,
        query_num: int = 64,
        layer_num: int = 2,
        hidden_size: int | None = None,
        num_attention_heads: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__(in_dim, out_dim, num_patches)
        if not isinstance(query_num, int) or isinstance(query_num, bool) or query_num < 1:
            raise ValueError(f"query_num={query_num!r} must be a positive int for the qformer projector")
        if not isinstance(layer_num, int) or layer_num < 1:
            raise ValueError(f"layer_num must be a positive int, got {layer_num!r}")
        hidden = in_dim if hidden_size is None else hidden_size
        heads = _default_heads(hidden) if num_attention_heads is None else num_attention_heads
        if hidden % heads != 0:
            raise ValueError(f"qformer hidden_size={hidden} is not divisible by num_attention_heads={heads}")
        self.query_num = query_num
        self.layer_num = layer_num
        self.hidden_size = hidden
        config = Blip2QFormerConfig(
            hidden_size=hidden,
            num_hidden_layers=layer_num,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            encoder_hidden_size=in_dim,
            cross_attention_frequency=1,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            attn_implementation="eager",  # attention maps are needed for relevance
        )
        # names as in BLIP-2 (query_tokens, qformer, language_projection)
        self.query_tokens = nn.Parameter(torch.zeros(1, query_num, hidden))
        nn.init.normal_(self.query_tokens, std=config.initializer_range)
        self.qformer = Blip2QFormerModel(config)
        self.language_projection = nn.Linear(hidden, out_dim)

    def num_tokens(self) -> int:
        return self.query_num

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        self._check_input(patch_feats)
        queries = self.query_tokens.expand(patch_feats.shape[0], -1, -1)  # b q h
        out = self.qformer(query_embeds=queries, encoder_hidden_states=patch_feats).last_hidden_state
        return self.language_projection(out.to(self.language_projection.weight.dtype))

    def forward_with_attentions(
        self, patch_feats: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Forward that also returns the attention probabilities, in layer order.

        Returns (tokens b q d_out, self_attns [b heads q q] * layer_num, cross_attns [b heads q n] * layer_num).
        The maps are part of the autograd graph: call `.retain_grad()` on them before `backward()` to get
        the gradients `query_to_patch_relevance` needs. Put the module in eval mode to avoid dropout.
        """
        self_attns: list[torch.Tensor] = []
        cross_attns: list[torch.Tensor] = []

        def keep(store: list[torch.Tensor]):
            def hook(_module, _inputs, output):
                store.append(output[1])  # (attn_output, attn_probs)

            return hook

        # hooks on the attention modules themselves: self vs cross is known by module, not guessed by shape
        handles = []
        for layer in self.qformer.encoder.layer:
            handles.append(layer.attention.attention.register_forward_hook(keep(self_attns)))
            handles.append(layer.crossattention.attention.register_forward_hook(keep(cross_attns)))
        try:
            tokens = self.forward(patch_feats)
        finally:
            for handle in handles:
                handle.remove()
        if any(a is None for a in self_attns + cross_attns):
            raise RuntimeError("the Q-Former returned no attention maps; it must use attn_implementation='eager'")
        return tokens, self_attns, cross_attns

    def query_to_patch_relevance(
        self,
        self_attns: list[torch.Tensor] | None = None,
        cross_attns: list[torch.Tensor] | None = None,
        self_grads: list[torch.Tensor] | None = None,
        cross_grads: list[torch.Tensor] | None = None,
        patch_relevance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """R_q2i (b q n) by GAE over the Q-Former's layers.

        Start R_qq = I, R_qi = 0; per layer (input to output): self-attention rule R_qq += Ā R_qq,
        R_qi += Ā R_qi; cross-attention rule R_qi += R̄_qqᵀ Ā_qi R̄_ii, with Ā = E_h[(∇A ⊙ A)^+] and R̄ the
        eq. 8-9 normalisation. R_ii is the patches' self-relevance (`patch_relevance`, n x n or b n n;
        default I, i.e. the vision tower is not propagated through). Without gradients it falls back to
        the raw last-layer cross-attention averaged over heads (the `rawattn` baseline).
        """
        if self_attns is not None and cross_attns is not None and len(self_attns) != len(cross_attns):
            raise ValueError(
                "self_attns, cross_attns, self_grads and cross_grads must have one entry per Q-Former layer, got "
                f"{len(self_attns)}, {len(cross_attns)}, {len(self_grads or [])}, {len(cross_grads or [])}"
            )
        return gae_query_to_patch(self_attns, cross_attns, self_grads, cross_grads, patch_relevance)
