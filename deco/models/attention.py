"""Which attention kernel the vision tower and the LLM run: "sdpa" (fused, fast; the default of the
configs), "flash_attention_2" (the flash-attn package, CUDA with bf16/fp16; what LLaVA trains with) or
"eager" (slower, but the only one that returns attention maps, which relevance needs).

Relevance code switches to eager only around the forward that reads the maps (`attention(model, "eager")`),
so a model can train and generate with SDPA and still be explained. The Q-Former always runs eager.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from torch import nn

IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
FLASH_ATTENTION_2 = "flash_attention_2"


def check_implementation(name: str, key: str = "attn_implementation") -> None:
    """ValueError naming `key` for an unknown implementation, or flash_attention_2 without flash-attn."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{key}={name!r} is unknown; allowed: {', '.join(IMPLEMENTATIONS)}")
    if name == FLASH_ATTENTION_2 and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(f"{key}=flash_attention_2 needs the flash-attn package, which is not importable here "
                         "(pip install flash-attn --no-build-isolation, on a CUDA machine); use sdpa instead")


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
    check_implementation(name)
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
