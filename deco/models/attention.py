"""Which attention kernel the vision tower and the LLM run: "sdpa" (fused, fast; the default of the
configs) or "eager" (slower, but the only one that returns attention maps, which relevance needs).

Relevance code switches to eager only around the forward that reads the maps (`attention(model, "eager")`),
so a model can train and generate with SDPA and still be explained. The Q-Former always runs eager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

IMPLEMENTATIONS = ("eager", "sdpa")


def _parts(model: nn.Module) -> list[nn.Module]:
    """The HF models inside an MLLM (vision tower's CLIP, LLM), or `model` itself for a bare HF model."""
    vision = getattr(getattr(model, "vision", None), "model", None)
    llm = getattr(model, "llm", None)
    parts = [p for p in (vision, llm) if p is not None] or [model]
    return [p for p in parts if hasattr(p, "set_attn_implementation")]


def get_attention(model: nn.Module) -> dict[nn.Module, str | None]:
    """Current implementation of each HF part of `model`."""
    return {p: getattr(p.config, "_attn_implementation", None) for p in _parts(model)}


def set_attention(model: nn.Module, name: str) -> None:
    """Switch every HF part of `model` (vision tower, LLM; peft-wrapped LLMs too) to `name`."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={name!r} is unknown; allowed: {', '.join(IMPLEMENTATIONS)}")
    for part in _parts(model):
        part.set_attn_implementation(name)


@contextlib.contextmanager
def attention(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Run the block with `name` attention, then restore each part's previous implementation."""
    before = get_attention(model)
    set_attention(model, name)
    try:
        yield model
    finally:
        for part, impl in before.items():
            if impl is not None:
                part.set_attn_implementation(impl)
