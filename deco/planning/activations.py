"""What a training forward keeps for backward, measured on fake tensors (no memory is allocated).

The MLLM's forward (vision tower -> projector -> LLM with the loss) runs under a FakeTensorMode with
`torch.autograd.graph.saved_tensors_hooks`: every tensor autograd saves for backward passes through the
hook, is counted once per storage (views and re-saves of one tensor cost nothing more), and is booked to
the checkpointable layer (a decoder layer, a ViT layer) whose forward was running, or to "outside".
Parameters are not activations, but the low-precision copies autocast makes of them are: bf16-mixed keeps
fp32 weights and casts each one for its matmul; the cast is saved for backward, and autocast caches the
casts of trainable weights until the forward ends (`cached_casts`). A strategy that already holds bf16
weights (FSDP's mixed precision) makes none: profile it with bf16 parameters.

With gradient checkpointing a layer keeps only its input until backward recomputes it, one layer at a
time: the peak is the larger of the end of the forward (outside + the inputs of all layers + autocast's
cache) and the backward (outside + the inputs + the largest layer's saved tensors + `transient`). The
gradient of the largest saved tensor (the logits under the loss, for an LLM) exists next to it at the
start of backward: that is `transient`. Layers that save nothing (a frozen tower run without autograd)
keep no input either.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from deco.planning.arch import checkpoint_layer_classes


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


@dataclass
class ActivationProfile:
    """Bytes a forward saves for backward, by where they were saved."""

    outside: int = 0
    layer_inputs: list[int] = field(default_factory=list)
    layer_saved: list[int] = field(default_factory=list)
    cached_casts: int = 0  # autocast's cache: low-precision copies of trainable weights, alive until forward ends
    transient: int = 0     # the largest saved tensor: its gradient coexists with it when backward starts

    def total(self, checkpointing: bool) -> int:
        if not checkpointing:
            return self.outside + sum(self.layer_saved) + self.transient
        kept = self.outside + sum(i for i, s in zip(self.layer_inputs, self.layer_saved) if s)
        return max(kept + self.cached_casts, kept + max(self.layer_saved, default=0) + self.transient)


class _WeightCasts(TorchDispatchMode):
    """Bytes of the dtype casts of trainable parameters (autocast caches one per weight per forward)."""

    def __init__(self, trainable_keys: set[int]):
        super().__init__()
        self.trainable_keys, self.seen, self.cached = trainable_keys, set(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor) \
                and _key(args[0]) in self.trainable_keys and isinstance(out, torch.Tensor) \
                and _key(args[0]) not in self.seen:
            self.seen.add(_key(args[0]))
            self.cached += _nbytes(out)
        return out


class _Recorder:
    """Saved-tensor hook + layer hooks that book each newly saved storage to the running layer."""

    def __init__(self, model: torch.nn.Module):
        self.params = {_key(p) for p in model.parameters()} | {_key(b) for b in model.buffers()}
        self.seen: set[int] = set()
        self.profile = ActivationProfile()
        self.current: int | None = None
        self.casts = _WeightCasts({_key(p) for p in model.parameters() if p.requires_grad})
        self.largest = 0
        layers = [m for m in model.modules() if isinstance(m, checkpoint_layer_classes())]
        self.handles = []
        for index, layer in enumerate(layers):
            self.profile.layer_inputs.append(0)
            self.profile.layer_saved.append(0)
            self.handles.append(layer.register_forward_pre_hook(self._enter(index), with_kwargs=True))
            self.handles.append(layer.register_forward_hook(self._leave(index)))

    def _enter(self, index: int):
        def hook(_module, args, kwargs):
            if self.current is None:  # an outer checkpoint layer owns everything inside it
                self.current = index
                hidden = args[0] if args else kwargs.get("hidden_states")
                if isinstance(hidden, torch.Tensor):
                    self.profile.layer_inputs[index] = _nbytes(hidden)
        return hook

    def _leave(self, index: int):
        def hook(_module, _args, _out):
            if self.current == index:
                self.current = None
        return hook

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _key(tensor)
        if key in self.params or key in self.seen:
            return tensor
        self.seen.add(key)
        size = _nbytes(tensor)
        self.largest = max(self.largest, size)
        if self.current is None:
            self.profile.outside += size
        else:
            self.profile.layer_saved[self.current] += size
        return tensor

    def close(self) -> ActivationProfile:
        for handle in self.handles:
            handle.remove()
        self.profile.transient = self.largest
        self.profile.cached_casts = self.casts.cached
        return self.profile


def profile_training_forward(model, batch_size: int, seq_len: int, *, autocast_dtype: torch.dtype | None,
                             fake_mode) -> ActivationProfile:
    """Run `model`'s (a fake MLLM's) training forward on a batch of `batch_size` image samples of `seq_len`
    positions each (visual tokens included) and return what it saves for backward."""
    vision, llm = model.vision, model.llm
    image_size = vision.image_size
    num_visual = model.num_visual_tokens
    if seq_len <= num_visual:
        raise ValueError(f"plan.seq_len={seq_len} leaves no text next to the {num_visual} visual tokens")
    recorder = _Recorder(model)
    model.train()
    autocast = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    try:
        with fake_mode, recorder.casts, autocast, torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda t: t):
            pixels = torch.zeros(batch_size, 3, image_size, image_size, dtype=vision.dtype)
            ids = torch.zeros(batch_size, seq_len - num_visual, dtype=torch.long)
            image_tokens = model.encode_images(pixels)  # b q d
            text = llm.get_input_embeddings()(ids)  # b t d
            embeds = torch.cat([image_tokens.to(text.dtype), text], dim=1)  # b s d
            labels = torch.zeros(batch_size, seq_len, dtype=torch.long)
            llm(inputs_embeds=embeds, labels=labels)
    finally:
        profile = recorder.close()
    return profile
