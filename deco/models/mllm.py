"""The composed multimodal LLM: vision tower -> projector -> LLM (LLaVA style).

Text arrives with one `<image>` placeholder token per sample (none for text-only samples). The placeholder
is replaced by the projector's q visual tokens in a single vectorised scatter (no loop over the batch):
text after the placeholder shifts right by q - 1, labels are `ignore_index` on visual tokens and padding,
and the attention mask grows with the sequence. Right padding is for training; left padding (every row
right-aligned after the merge, text-only rows included) is for batched greedy generation with a KV cache.
An optional training-free reducer (`set_reduction`, deco.models.reduction) cuts the visual tokens at inference:
before the projector (VisionZip, PruMerge+, DivPrune, pool) or inside the LLM's prefill (FastV).
"""

from __future__ import annotations

import torch
from torch import nn

from deco.models.generation import greedy_decode, position_ids_from_mask
from deco.models.projectors.base import Projector
from deco.models.vision import VisionTower

PADDING_SIDES = ("right", "left")
__all__ = ["MLLM", "PADDING_SIDES", "position_ids_from_mask"]


class MLLM(nn.Module):
    """Vision tower + projector + causal LM.

    Args:
        vision: patch-feature encoder (b 3 H W -> b n d_vision).
        projector: b n d_vision -> b q d_llm.
        llm: a transformers causal LM (or a peft wrapper around one).
        image_token_id: id of the `<image>` placeholder in `input_ids`; it never reaches the embedding table.
        ignore_index: label value the loss skips.
    """

    def __init__(self, vision: VisionTower, projector: Projector, llm: nn.Module, image_token_id: int,
                 ignore_index: int = -100):
        super().__init__()
        if projector.in_dim != vision.hidden_size:
            raise ValueError(f"projector in_dim={projector.in_dim} != vision hidden_size={vision.hidden_size}")
        if projector.num_patches != vision.num_patches:
            raise ValueError(f"projector num_patches={projector.num_patches} != vision tower's {vision.num_patches}")
        llm_dim = llm.get_input_embeddings().embedding_dim
        if projector.out_dim != llm_dim:
            raise ValueError(f"projector out_dim={projector.out_dim} != LLM hidden size {llm_dim}")
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.image_token_id = int(image_token_id)
        self.ignore_index = ignore_index
        self.reducer = None  # training-free visual-token reduction (set_reduction); None: every token

    def set_reduction(self, reducer) -> None:
        """Use `reducer` (deco.models.reduction; None: no reduction) from now on; raises ReductionConfigError
        when it cannot work with this model (a keep budget, a layer, a projector that mixes patches)."""
        from deco.models.reduction import ReductionConfigError

        if reducer is not None:
            if reducer.stage == "vision" and not hasattr(self.projector, "forward_tokens"):
                raise ReductionConfigError(
                    f"reduction={reducer.name} picks the tower's tokens before a token-wise projector (linear, "
                    f"mlp2x_gelu); this model's {type(self.projector).__name__} mixes patches: use reduction=fastv")
            llm_layers = getattr(getattr(self.llm, "config", None), "num_hidden_layers", None)
            reducer.check(self.projector.num_tokens(), llm_layers)
        self.reducer = reducer

    @property
    def num_visual_tokens(self) -> int:
        return self.projector.num_tokens()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:  # b 3 H W -> b q d_llm
        """Vision tower (without autograd when it is entirely frozen) then projector."""
        vision_trainable = any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and vision_trainable):
            feats = self.vision(pixel_values)  # b n d_vision
        return self.project(feats)

    def project(self, feats: torch.Tensor) -> torch.Tensor:  # b n d_vision -> b q d_llm
        """The projector on tower features (made here, or beforehand: deco.data.tower_features)."""
        param = next(self.projector.parameters(), None)
        return self.projector(feats.to(param.dtype) if param is not None else feats)

    def _visual_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """encode_images, or the pre-LLM reducer's tokens: projector(M @ tower tokens)."""
        if self.reducer is None or self.reducer.stage != "vision":
            return self.encode_images(pixel_values)
        from deco.models.reduction import reduce_features

        feats, _ = reduce_features(self.vision, self.projector, self.reducer, pixel_values)
        return self.projector.forward_tokens(feats)

    def _check_padding(self, attention_mask: torch.Tensor, padding_side: str) -> None:
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side='{padding_side}' is unknown; choose one of: {', '.join(PADDING_SIDES)}")
        mask = attention_mask.long()
        ok = (mask[:, 1:] >= mask[:, :-1]) if padding_side == "left" else (mask[:, 1:] <= mask[:, :-1])
        if not bool(ok.all()):
            raise ValueError(f"attention_mask is not {padding_side}-padded (padding_side='{padding_side}')")

    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
        image_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Merge visual tokens into the text embeddings.

        Args:
            input_ids: b t, with at most one `image_token_id` per row.
            attention_mask: b t (1 = token, 0 = padding); default all ones.
            pixel_values: b 3 H W (one per row; rows without a placeholder ignore theirs) or
                k 3 H W (only the k rows with a placeholder, in row order).
            labels: b t or None.
            padding_side: "right" (training) or "left" (generation).
            image_tokens: projector outputs (b or k, q, d_llm) to use instead of encoding `pixel_values`
                (explanation code computes them itself to keep their graph).

        Returns:
            inputs_embeds (b T d), attention_mask (b T), labels (b T or None), image_positions (b; index of
            the first visual token, -1 for rows without an image), with T = t + q - 1 when any row has an
            image, else t.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (b, t), got {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels {tuple(labels.shape)} != input_ids {tuple(input_ids.shape)}")
        self._check_padding(attention_mask, padding_side)

        is_img = input_ids == self.image_token_id  # b t
        count = is_img.sum(1)
        if bool((count > 1).any()):
            bad = (count > 1).nonzero().flatten().tolist()
            raise ValueError(f"rows {bad} hold more than one <image> placeholder (id {self.image_token_id}); one per sample is supported")
        if bool((is_img & (attention_mask == 0)).any()):
            raise ValueError("an <image> placeholder sits in the padding (attention_mask == 0)")
        has_img = count == 1  # b
        n_img = int(has_img.sum())

        if n_img > 0:
            if image_tokens is None:
                if pixel_values is None:
                    raise ValueError(f"{n_img} rows have an <image> placeholder but pixel_values is None")
                image_tokens = self._visual_tokens(self._rows_with_image(pixel_values, has_img, "pixel_values"))
            else:
                image_tokens = self._rows_with_image(image_tokens, has_img, "image_tokens")
            q = image_tokens.shape[1]
        else:
            q = 1  # nothing to expand
        extra = q - 1

        # placeholder column; rows without an image: t (right: nothing shifts) or -1 (left: everything shifts)
        col = torch.arange(t, device=device)
        img_col = is_img.long().argmax(1)  # b
        no_img_col = -1 if padding_side == "left" else t
        pivot = torch.where(has_img, img_col, torch.full_like(img_col, no_img_col))
        new_col = col + extra * (col[None, :] > pivot[:, None]).long()  # b t: where each text token lands
        total = t + extra

        embed = self.llm.get_input_embeddings()
        text_embeds = embed(input_ids.masked_fill(is_img, 0))  # b t d; placeholder id never looked up
        keep = ~is_img
        rows = torch.arange(b, device=device)[:, None].expand(b, t)[keep]
        cols = new_col[keep]
        inputs_embeds = text_embeds.new_zeros(b, total, text_embeds.shape[-1])
        inputs_embeds[rows, cols] = text_embeds[keep]
        merged_mask = attention_mask.new_zeros(b, total)
        merged_mask[rows, cols] = attention_mask[keep]
        merged_labels = None
        if labels is not None:
            merged_labels = labels.new_full((b, total), self.ignore_index)
            merged_labels[rows, cols] = labels[keep]
        if n_img > 0:
            img_rows = has_img.nonzero().flatten()  # k
            vis_cols = img_col[img_rows, None] + torch.arange(q, device=device)  # k q
            inputs_embeds[img_rows[:, None], vis_cols] = image_tokens.to(inputs_embeds.dtype)
            merged_mask[img_rows[:, None], vis_cols] = 1
        image_positions = torch.where(has_img, img_col, torch.full_like(img_col, -1))
        return inputs_embeds, merged_mask, merged_labels, image_positions

    @staticmethod
    def _rows_with_image(values: torch.Tensor, has_img: torch.Tensor, name: str) -> torch.Tensor:
        """Select the entries for rows with a placeholder from a per-row (b) or per-image (k) batch."""
        b, k = has_img.shape[0], int(has_img.sum())
        if values.shape[0] == b:
            return values if k == b else values[has_img.to(values.device)]
        if values.shape[0] == k:
            return values
        raise ValueError(f"{name} has {values.shape[0]} entries; expected {b} (one per row) or {k} (one per <image>)")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
        image_tokens: torch.Tensor | None = None,
        **llm_kwargs,
    ):
        """Merged forward through the LLM; returns its output (`loss` when labels are given, `logits`)."""
        embeds, mask, merged_labels, image_positions = self.prepare_inputs_embeds(
            input_ids, attention_mask, pixel_values, labels, padding_side, image_tokens
        )
        if self.reducer is not None and self.reducer.stage == "llm":
            from deco.models.reduction.llm_runner import pruned_forward

            if labels is not None or llm_kwargs:
                raise ValueError(f"reduction={self.reducer.name} runs inference only: no labels or LLM keyword arguments")
            choose = self.reducer.chooser(mask, image_positions, self.projector.num_tokens())
            return pruned_forward(self.llm, embeds, mask, self.reducer.layer, choose)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                        labels=merged_labels, **llm_kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        image_tokens: torch.Tensor | None = None,
        cache: str = "static",
        prefill: str = "auto",
    ) -> torch.Tensor:
        """Greedy decoding with a KV cache on left-padded prompts; returns the new tokens (b, <= max_new_tokens).

        Rows that produced EOS are filled with `pad_token_id` (default: the first EOS id, else 0); decoding
        stops early once every row has produced EOS. `cache` ("static" | "dynamic") and `prefill` ("auto" |
        "batched" | "rows") change the speed, not the tokens (deco/models/generation.py).
        """
        embeds, mask, _, image_positions = self.prepare_inputs_embeds(
            input_ids, attention_mask, pixel_values, padding_side="left", image_tokens=image_tokens
        )
        eos_ids = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        pad = pad_token_id if pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
        if self.reducer is not None and self.reducer.stage == "llm":
            from deco.models.reduction.llm_runner import pruned_greedy_decode

            choose = self.reducer.chooser(mask, image_positions, self.projector.num_tokens())
            return pruned_greedy_decode(self.llm, embeds, mask, self.reducer.layer, choose, max_new_tokens, eos_ids, pad)
        return greedy_decode(self.llm, embeds, mask, max_new_tokens, eos_ids, pad, cache=cache, prefill=prefill)
