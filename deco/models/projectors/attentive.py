"""R_q2i by GAE for projectors whose queries attend to the patches (Q-Former, resampler, TokenPacker, D-Abstractor).

`gae_query_to_patch` is the rule the Q-Former introduced (Chefer, Gur & Wolf, ICCV 2021, via the rules in
`deco.relevance.gae`): start R_qq = I, R_qi = 0; per layer, input to output, the self-attention rule
R_qq += Ā R_qq, R_qi += Ā R_qi (skipped for layers without query self-attention), then the cross-attention
rule R_qi += R̄_qqᵀ Ā_qi R̄_ii, with Ā = E_h[(∇A ⊙ A)^+]. Without gradients it returns the raw last-layer
cross-attention averaged over heads (the `rawattn` baseline). R is accumulated in float64: R_qq is I plus
terms that may be ~1e-8 (a weakly trained model's gradients), which float32 would round away on the diagonal
before eq. 9 subtracts I again (measured: 4e-6 relative error in R_q2i against a float64 transcription).

`AttentiveProjector` gives a projector `forward_with_attentions` (what `deco.explain` calls) and that
`query_to_patch_relevance`: its mixing step hands each map to `self.keep("self" | "cross", attn)`, which
stores it while a `forward_with_attentions` call is recording. Maps are the tensors the forward used, so
their gradients are the ones GAE needs.
"""

from __future__ import annotations

import torch

from deco.relevance.gae import avg_heads, cross_attention_rule, self_attention_rule


def gae_query_to_patch(
    self_attns: list[torch.Tensor] | None,
    cross_attns: list[torch.Tensor] | None,
    self_grads: list[torch.Tensor] | None = None,
    cross_grads: list[torch.Tensor] | None = None,
    patch_relevance: torch.Tensor | None = None,
) -> torch.Tensor:
    """R_q2i (b q n) by GAE; `self_attns` may be empty (queries that never attend to each other)."""
    if not cross_attns:
        raise ValueError("query_to_patch_relevance needs cross_attns from forward_with_attentions")
    if self_grads is None and cross_grads is None:
        return cross_attns[-1].detach().float().mean(dim=1)
    if self_attns is None or self_grads is None or cross_grads is None:
        raise ValueError("GAE needs self_attns, self_grads and cross_grads together (or no grads for raw attention)")
    if len(self_attns) != len(self_grads) or len(cross_attns) != len(cross_grads) or (
        self_attns and len(self_attns) != len(cross_attns)
    ):
        raise ValueError(
            "self_attns, cross_attns, self_grads and cross_grads must have one entry per layer (no self maps at "
            f"all is allowed), got {len(self_attns)}, {len(cross_attns)}, {len(self_grads)}, {len(cross_grads)}"
        )
    b, _, q, n = cross_attns[0].shape
    ref = cross_attns[0]
    r_qq = torch.eye(q, dtype=torch.float64, device=ref.device).expand(b, q, q).clone()
    r_qi = torch.zeros(b, q, n, dtype=torch.float64, device=ref.device)
    r_ii = None if patch_relevance is None else patch_relevance.detach().double().to(ref.device)
    for layer, (a_c, g_c) in enumerate(zip(cross_attns, cross_grads)):
        if g_c is None or (self_attns and self_grads[layer] is None):
            raise ValueError("a gradient is None: call .retain_grad() on every attention map before backward()")
        if self_attns:
            cam = avg_heads(self_attns[layer].detach(), self_grads[layer].detach()).double()  # b q q
            # both updates use the old R (GAE eqs. 6-7)
            r_qq, r_qi = self_attention_rule(r_qq, cam), self_attention_rule(r_qi, cam)
        cam = avg_heads(a_c.detach(), g_c.detach()).double()  # b q n
        r_qi = cross_attention_rule(r_qi, r_qq, cam, r_ii)  # GAE eq. 10
    return r_qi.float()


class AttentiveProjector:
    """Mixin for a `Projector` whose mixing step calls `self.keep(kind, attn)` on each attention map."""

    _recording: dict[str, list[torch.Tensor]] | None = None

    def keep(self, kind: str, attn: torch.Tensor) -> None:
        """Store `attn` (b heads q x) as a "self" (x = q) or "cross" (x = n) map while recording."""
        if self._recording is not None:
            self._recording[kind].append(attn)

    def forward_with_attentions(self, patch_feats: torch.Tensor):
        """(tokens b q d_out, self_attns [b h q q] per layer (may be empty), cross_attns [b h q n] per layer)."""
        self._recording = {"self": [], "cross": []}
        try:
            tokens = self(patch_feats)
            maps = self._recording
        finally:
            self._recording = None
        return tokens, maps["self"], maps["cross"]

    def query_to_patch_relevance(self, self_attns=None, cross_attns=None, self_grads=None, cross_grads=None,
                                 patch_relevance=None, patch_feats=None) -> torch.Tensor:
        """R_q2i (b q n) by GAE over the recorded maps (see `gae_query_to_patch`); raw attention without grads."""
        if cross_attns is None and patch_feats is not None:  # called like a structural projector
            _, self_attns, cross_attns = self.forward_with_attentions(patch_feats)
        return gae_query_to_patch(self_attns, cross_attns, self_grads, cross_grads, patch_relevance)
