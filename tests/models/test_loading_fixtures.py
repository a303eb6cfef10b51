"""Helpers shared by the loading/export tests: tiny checkpoints written in the real layouts.

Nothing here is a test. Each writer builds random tiny models with transformers / peft and saves them the
way the original projects do (LLaVA original, LLaVA LoRA + non_lora_trainables.bin, llava-hf), so the
readers are exercised on the same files a user brings, only smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from deco.data.image import build_image_processor
from deco.data.tokenizer import build_tiny_tokenizer
from deco.models.projectors.pooling import AvgPoolProjector

IMAGE_SIZE, PATCH = 56, 14  # 4 x 4 = 16 patches
NUM_PATCHES = (IMAGE_SIZE // PATCH) ** 2
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH,
)
LLM = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=256,
)
PROMPT = "USER: <image>\nWhat color is the circle? ASSISTANT:"


def tokenizer():
    return build_tiny_tokenizer()


def prompt_ids(tok, prompt: str = PROMPT) -> torch.Tensor:  # 1 t, one <image>
    ids = torch.tensor([tok(prompt).input_ids])
    assert int((ids == tok.convert_tokens_to_ids("<image>")).sum()) == 1
    return ids


def expand_image_token(ids: torch.Tensor, image_id: int, q: int) -> torch.Tensor:
    """llava-hf prompt: the one <image> repeated q times (what LlavaProcessor does)."""
    row = []
    for t in ids[0].tolist():
        row.extend([t] * q if t == image_id else [t])
    return torch.tensor([row])


def pixels(seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)


def write_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny CLIP vision checkpoint + CLIP preprocessor, as `openai/clip-vit-large-patch14-336` ships."""
    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(directory)
    build_image_processor(IMAGE_SIZE).save_pretrained(directory)
    return directory


def llama(vocab: int, seed: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**LLM, vocab_size=vocab, attn_implementation="eager")).eval()


def mlp(in_dim: int, out_dim: int, layers: int = 2, seed: int = 2) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(1, layers):
        mods += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*mods)


def llava_config(llm: LlamaForCausalLM, projector_type: str, clip_dir: Path, **extra) -> dict:
    cfg = llm.config.to_dict()
    cfg.update(
        model_type="llava",
        architectures=["LlavaLlamaForCausalLM"],
        mm_projector_type=projector_type,
        mm_hidden_size=VISION["hidden_size"],
        mm_vision_tower=str(clip_dir),
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        image_aspect_ratio="pad",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        mm_patch_merge_type="flat",
        tokenizer_model_max_length=256,
        **extra,
    )
    return cfg


def write_llava_original(
    directory: Path,
    clip_dir: Path,
    projector: nn.Module,
    projector_type: str,
    prefix: str = "",
    pickle_weights: bool = True,
    extra_keys: dict | None = None,
):
    """LLaVA-1.5 layout: Llama weights + `model.mm_projector.<prefix>*` in one checkpoint, tokenizer, config."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    llm = llama(len(tok))
    state = dict(llm.state_dict())
    state.update({f"model.mm_projector.{prefix}{k}": v for k, v in projector.state_dict().items()})
    state.update(extra_keys or {})
    if pickle_weights:
        torch.save(state, directory / "pytorch_model.bin")
    else:  # two safetensors shards + index, like the 7B release
        from safetensors.torch import save_file

        keys = sorted(state)
        halves = {
            "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
        }
        weight_map = {}
        for name, part in halves.items():
            save_file({k: state[k].contiguous() for k in part}, str(directory / name))
            weight_map.update({k: name for k in part})
        (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(llava_config(llm, projector_type, clip_dir), default=str))
    tok.save_pretrained(directory)
    return llm, tok


def write_llama_base(directory: Path):
    """A Vicuna-like base: plain LlamaForCausalLM + tokenizer."""
    tok = tokenizer()
    llm = llama(len(tok))
    llm.save_pretrained(directory)
    tok.save_pretrained(directory)
    return llm, tok


def write_llava_lora(
    directory: Path, base_dir: Path, clip_dir: Path, projector_state: dict, projector_type: str, seed: int = 3
):
    """LLaVA train.py LoRA output: config.json, peft adapter, non_lora_trainables.bin (projector)."""
    from peft import LoraConfig

    from deco.models.llm import peft_model as get_peft_model  # peft.get_peft_model without its FutureWarning

    base = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )  # non-zero B, so the adapter changes the output
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(directory)
    cfg = llava_config(base, projector_type, clip_dir, _name_or_path=str(base_dir))
    (directory / "config.json").write_text(json.dumps(cfg, default=str))
    torch.save(
        {f"base_model.model.model.mm_projector.{k}": v for k, v in projector_state.items()},
        directory / "non_lora_trainables.bin",
    )
    return directory


def write_llava_hf(directory: Path, seed: int = 4):
    """transformers LlavaForConditionalGeneration (random, eager) saved with save_pretrained + tokenizer."""
    tok = tokenizer()
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=LlamaConfig(**LLM, vocab_size=len(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=NUM_PATCHES,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    build_image_processor(IMAGE_SIZE).save_pretrained(directory)
    return directory


def reference_logits(clip_dir: Path, projector, llm, ids: torch.Tensor, pv: torch.Tensor, image_id: int):
    """LLaVA's forward written out by hand: CLIP layer -2 patches -> projector -> spliced at <image> -> LLM."""
    clip = CLIPVisionModel.from_pretrained(clip_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        feats = clip(pv, output_hidden_states=True).hidden_states[-2][:, 1:]
        tokens = projector(feats)  # 1 q d
        pos = int((ids[0] == image_id).nonzero())
        embed = llm.get_input_embeddings()
        embeds = torch.cat([embed(ids[:, :pos]), tokens, embed(ids[:, pos + 1 :])], dim=1)
        return llm(inputs_embeds=embeds).logits


# ---------------------------------------------------------------- module-scoped checkpoints (pytest fixtures)
# A test module imports the `*_fixture` functions it needs (pytest registers them under `name`); a
# tests/models/conftest.py would shadow tests/conftest.py, which test modules import by name.


@pytest.fixture(scope="module", name="root")
def root_fixture(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpts")


@pytest.fixture(scope="module", name="clip_dir")
def clip_dir_fixture(root):
    return write_clip(root / "clip")


@pytest.fixture(scope="module", name="avgpool")
def avgpool_fixture():
    torch.manual_seed(5)
    return AvgPoolProjector(VISION["hidden_size"], LLM["hidden_size"], NUM_PATCHES, query_num=4, mlp_depth=2).eval()


@pytest.fixture(scope="module", name="base_dir")
def base_dir_fixture(root):
    write_llama_base(root / "base")
    return root / "base"


@pytest.fixture(scope="module", name="hf_dir")
def hf_dir_fixture(root):
    return write_llava_hf(root / "llava_hf")
