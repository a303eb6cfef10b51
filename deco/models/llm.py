"""Language model: build a causal LM and optionally wrap it with LoRA.

`build_llm` loads a checkpoint with `AutoModelForCausalLM.from_pretrained` (hub id or local dir) or builds
a Llama-family model from config kwargs (the offline `model=tiny`). `apply_lora` adds LoRA adapters to
every Linear layer of the LLM except the output head, as LLaVA's `find_all_linear_names` does.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from deco.utils import remote_code
from deco.utils.quiet import quiet_weight_loading

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _dtype(name: str | None) -> torch.dtype | str | None:
    if name is None or name == "auto":
        return name
    if name not in DTYPES:
        raise ValueError(f"torch_dtype='{name}' is unknown; choose one of: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def build_llm(
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    vocab_size: int | None = None,
    attn_implementation: str = "eager",
    torch_dtype: str | None = None,
) -> PreTrainedModel:
    """A causal LM whose input embeddings cover `vocab_size` tokens (resized up if the checkpoint has fewer)."""
    dtype = _dtype(torch_dtype)
    if name_or_path is not None:
        name_or_path = str(name_or_path)
        expanded = os.path.expanduser(name_or_path)
        if name_or_path.startswith(("/", "./", "../", "~")) and not os.path.exists(expanded):
            raise FileNotFoundError(f"LLM checkpoint not found: {name_or_path}")
        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation,
                                  "trust_remote_code": remote_code.current()}  # never from stored settings
        if dtype is not None:
            kwargs["dtype"] = dtype
        with quiet_weight_loading():
            llm = AutoModelForCausalLM.from_pretrained(expanded if os.path.exists(expanded) else name_or_path, **kwargs)
        # the tokenizer may have gained tokens (e.g. <image>, pad): grow the embeddings, never shrink them
        if vocab_size is not None and vocab_size > llm.get_input_embeddings().num_embeddings:
            llm.resize_token_embeddings(vocab_size)
        return llm
    if config is None:
        raise ValueError("build_llm needs name_or_path (hub id or local dir) or config (LlamaConfig kwargs)")
    config = dict(config)
    if vocab_size is None and "vocab_size" not in config:
        raise ValueError("build_llm from a config needs vocab_size (the tokenizer length)")
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    llm = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=attn_implementation))
    if isinstance(dtype, torch.dtype):
        llm = llm.to(dtype)
    return llm


def find_linear_names(model: nn.Module, exclude: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Suffix names of every nn.Linear (q_proj, k_proj, ..., down_proj for Llama), minus `exclude`."""
    names = {name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    return sorted(names - set(exclude))


def apply_lora(
    llm: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | None = None,
):
    """Wrap `llm` in a peft LoRA model; only the adapters are trainable afterwards."""
    from peft import LoraConfig  # optional dependency of the finetune stage

    targets = list(target_modules) if target_modules is not None else find_linear_names(llm)
    if not targets:
        raise ValueError("apply_lora found no Linear layers to adapt; pass target_modules")
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")
    return peft_model(llm, lora)


def peft_model(llm: PreTrainedModel, lora_config):
    """`peft.get_peft_model`, without the FutureWarning of peft reading transformers' deprecated
    `is_gradient_checkpointing` alias (peft's code, not ours; printed in every LoRA run)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(llm, lora_config)
