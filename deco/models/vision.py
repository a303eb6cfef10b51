"""Vision tower: a CLIP ViT that returns patch features for the projector.

As in LLaVA, the features are the hidden states of layer `select_layer` (default -2, the penultimate
layer) with the CLS token dropped (`select_feature="patch"`) or kept (`"cls_patch"`). The tower loads
with `from_pretrained` (hub name or local directory) or is built from a `CLIPVisionConfig` dict, which is
how the offline `model=tiny` default gets a ViT with a real 24x24 patch grid and no download.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from deco.utils.quiet import quiet_weight_loading

SELECT_FEATURES = ("patch", "cls_patch")


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative, home-based or deeper than one slash."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


class VisionTower(nn.Module):
    """CLIP vision encoder returning `b n d` features of one hidden layer."""

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        select_layer: int = -2,
        select_feature: str = "patch",
        attn_implementation: str = "eager",
    ):
        super().__init__()
        if select_feature not in SELECT_FEATURES:
            raise ValueError(f"select_feature='{select_feature}' is unknown; choose one of: {', '.join(SELECT_FEATURES)}")
        if name_or_path is not None:
            name_or_path = str(name_or_path)
            expanded = os.path.expanduser(name_or_path)
            if _looks_local(name_or_path) and not os.path.exists(expanded):
                raise FileNotFoundError(f"vision tower checkpoint not found: {name_or_path}")
            with quiet_weight_loading():
                self.model = CLIPVisionModel.from_pretrained(
                    expanded if os.path.exists(expanded) else name_or_path, attn_implementation=attn_implementation
                )
        elif config is not None:
            self.model = CLIPVisionModel(CLIPVisionConfig(**dict(config), attn_implementation=attn_implementation))
        else:
            raise ValueError("VisionTower needs name_or_path (hub id or local dir) or config (CLIPVisionConfig kwargs)")
        num_layers = self.model.config.num_hidden_layers
        # hidden_states has num_layers + 1 entries (embeddings first)
        if not -(num_layers + 1) <= select_layer <= num_layers:
            raise ValueError(
                f"select_layer={select_layer} is out of range for a {num_layers}-layer vision tower "
                f"(allowed {-(num_layers + 1)} .. {num_layers})"
            )
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def config(self) -> CLIPVisionConfig:
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def grid_size(self) -> int:
        """Patches per side (24 for a 336 px image with 14 px patches)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Tokens `forward` returns per image: grid_size**2 (+1 with select_feature='cls_patch')."""
        return self.grid_size**2 + (1 if self.select_feature == "cls_patch" else 0)

    @property
    def layers_used(self) -> int:
        """Encoder layers that `forward` runs: up to the selected one (tiny tower: 2 of 3; CLIP-L: 23 of 24)."""
        return self.select_layer % (self.model.config.num_hidden_layers + 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # b 3 H W -> b n d
        return self._run(pixel_values)

    def forward_with_attentions(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features as `forward`, plus each used layer's attention probabilities (b h 1+n 1+n, CLS first).

        For relevance through the tower: the embeddings are made a leaf that requires grad, so the maps are
        in the autograd graph even when every weight is frozen. The maps exist only under eager attention
        (switch with `deco.models.attention.attention(model, "eager")`).
        """
        maps: list[torch.Tensor] = []
        clip = getattr(self.model, "vision_model", self.model)
        hooks = [layer.self_attn.register_forward_hook(lambda _m, _i, out: maps.append(out[1]))
                 for layer in clip.encoder.layers[: self.layers_used]]
        try:
            with torch.enable_grad():
                feats = self._run(pixel_values, leaf=True)
        finally:
            for hook in hooks:
                hook.remove()
        if len(maps) != self.layers_used or any(m is None for m in maps):
            raise RuntimeError("the vision tower returned no attention maps; it must run with eager attention")
        return feats, maps

    def _run(self, pixel_values: torch.Tensor, leaf: bool = False) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (b, 3, H, W), got {tuple(pixel_values.shape)}")
        # Only the layers up to the selected one run: the later ones cost compute and feed nothing. Their
        # weights stay in the module (state dicts keep every layer); the encoder loops over a shorter list.
        clip = getattr(self.model, "vision_model", self.model)  # transformers 4.x nests it
        feats = clip.pre_layrnorm(clip.embeddings(pixel_values.to(device=self.device, dtype=self.dtype)))
        if leaf:
            feats = feats.detach().requires_grad_(True)
        if self.layers_used:  # hidden state 0 is the encoder's input
            encoder, layers = clip.encoder, clip.encoder.layers
            encoder.layers = layers[: self.layers_used]
            try:
                feats = encoder(inputs_embeds=feats).last_hidden_state  # b (1 + n) d
            finally:
                encoder.layers = layers
        if self.select_feature == "patch":
            feats = feats[:, 1:]
        return feats
