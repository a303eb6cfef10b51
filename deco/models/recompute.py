"""Gradient checkpointing of an MLLM's vision tower and LLM (`model.gradient_checkpointing=true`).

Each transformer layer of the tower and of the LLM keeps only its input during the forward and runs
again in backward, so activations take one layer's worth plus a hidden state per layer instead of every
layer's intermediates (numbers: `python -m deco.plan`). Non-reentrant checkpointing (torch's
recommended mode) works with frozen inputs and frozen layers (stage 1, LoRA) without making the
embeddings require grad. The projector is small and is not checkpointed.
"""

from __future__ import annotations

from torch import nn

KWARGS = {"use_reentrant": False}


def _hf_parts(model: nn.Module) -> list[nn.Module]:
    vision = getattr(getattr(model, "vision", None), "model", None)
    llm = getattr(model, "llm", None)
    return [part for part in (vision, llm) if part is not None]


def enable_gradient_checkpointing(model: nn.Module) -> list[str]:
    """Turn on transformers' gradient checkpointing in the MLLM's tower and LLM (peft-wrapped too);
    returns the class names of the parts it was turned on for."""
    done = []
    for part in _hf_parts(model):
        if not getattr(part, "supports_gradient_checkpointing", True) and not hasattr(part, "base_model"):
            raise ValueError(f"model.gradient_checkpointing=true: {type(part).__name__} does not support it")
        if hasattr(part, "activation_checkpointing_enable"):  # transformers >= 5.x (the older name is deprecated)
            part.activation_checkpointing_enable(activation_checkpointing_kwargs=KWARGS)
        else:
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs=KWARGS)
        done.append(type(part).__name__)
    return done


def gradient_checkpointing_enabled(model: nn.Module) -> dict[str, bool]:
    """{part class name: whether its layers are checkpointed}."""
    out = {}
    for part in _hf_parts(model):
        base = part.get_base_model() if hasattr(part, "get_base_model") else part
        out[type(part).__name__] = any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
    return out
