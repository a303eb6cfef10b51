"""Loading real-format checkpoints: llava-hf, LLaVA original, LLaVA/DeCo LoRA, deco directories.

Every checkpoint is a tiny random model written in the real layout by tests/models/test_loading_fixtures.py.
The references are independent of deco's MLLM: transformers' own LlavaForConditionalGeneration forward,
LLaVA's forward written out by hand (CLIP layer -2 -> projector -> splice -> LLM), and peft's own merge.
"""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from test_loading_fixtures import (  # noqa: F401 (the *_fixture names: pytest fixtures, used by name)
    avgpool_fixture,
    base_dir_fixture,
    clip_dir_fixture,
    hf_dir_fixture,
    root_fixture,
    IMAGE_SIZE,
    LLM,
    NUM_PATCHES,
    VISION,
    expand_image_token,
    mlp,
    pixels,
    prompt_ids,
    reference_logits,
    write_llava_lora,
    write_llava_original,
)
from transformers import Blip2QFormerConfig, Blip2QFormerModel, LlamaForCausalLM, LlavaForConditionalGeneration

from deco.models.formats.llava_qformer import QFormerMLPProjector
from deco.models.loading import LoadedModel, detect_format, load_model

IMAGE_ID = 4  # <image> in the tiny tokenizer


def logits(loaded: LoadedModel, ids, pv):
    with torch.no_grad():
        return loaded.model(input_ids=ids, pixel_values=pv).logits


# ---------------------------------------------------------------- llava-hf


def test_llava_hf_logits_match_transformers(hf_dir):
    loaded = load_model(hf_dir)
    assert detect_format(hf_dir) == "llava_hf" and loaded.format == "llava_hf"
    assert loaded.projector_tag == "mlp2x_gelu" and loaded.report["unused"] == []
    ref = LlavaForConditionalGeneration.from_pretrained(hf_dir, attn_implementation="eager").eval()
    ids, pv = prompt_ids(loaded.tokenizer), pixels()
    ours = logits(loaded, ids, pv)  # one <image> placeholder, expanded inside deco's MLLM
    with torch.no_grad():
        theirs = ref(input_ids=expand_image_token(ids, IMAGE_ID, NUM_PATCHES), pixel_values=pv).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1] + NUM_PATCHES - 1, len(loaded.tokenizer))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # the weights themselves landed where llava-hf keeps them
    torch.testing.assert_close(getattr(loaded.model.projector, "2").weight, ref.model.multi_modal_projector.linear_2.weight)


def test_llava_hf_legacy_key_names_load(hf_dir, tmp_path):
    """The hub's older layout (`language_model.model.*`, `vision_tower.vision_model.*`) maps to the same model."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(hf_dir / "model.safetensors"))
    renamed = {}
    for key, value in state.items():
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key[len("vision_tower."):]
        renamed[key] = value
    for name in os.listdir(hf_dir):
        if name != "model.safetensors":
            (tmp_path / name).write_bytes((hf_dir / name).read_bytes())
    save_file(renamed, str(tmp_path / "model.safetensors"))
    a, b = load_model(hf_dir), load_model(tmp_path)
    ids, pv = prompt_ids(a.tokenizer), pixels(1)
    torch.testing.assert_close(logits(a, ids, pv), logits(b, ids, pv), atol=0, rtol=0)


# ---------------------------------------------------------------- LLaVA original


def test_llava_original_mlp2x_gelu(root, clip_dir):
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"])
    llm, tok = write_llava_original(root / "orig", clip_dir, projector, "mlp2x_gelu")
    loaded = load_model(root / "orig")
    assert loaded.format == "llava_original" and loaded.projector_tag == "mlp2x_gelu"
    assert loaded.config["image_aspect"] == "pad" and loaded.config["stage"]["template"] == "vicuna_v1"
    for i in (0, 2):
        torch.testing.assert_close(getattr(loaded.model.projector, str(i)).weight, projector[i].weight, atol=0, rtol=0)
    torch.testing.assert_close(loaded.model.llm.model.layers[1].mlp.up_proj.weight,
                               llm.model.layers[1].mlp.up_proj.weight, atol=0, rtol=0)
    ids, pv = prompt_ids(tok), pixels()
    ref = reference_logits(clip_dir, projector, llm, ids, pv, IMAGE_ID)
    torch.testing.assert_close(logits(loaded, ids, pv), ref, atol=1e-5, rtol=0)


def test_deco_avgpool_original_layout_sharded(root, clip_dir, avgpool):
    """DeCo's projector names (`sampler`, `mlp_projector.*`) inside a sharded safetensors LLaVA checkpoint."""
    llm, tok = write_llava_original(root / "avgpool", clip_dir, avgpool.mlp_projector, "avgpool2_4",
                                    prefix="mlp_projector.", pickle_weights=False)
    loaded = load_model(root / "avgpool")
    assert loaded.projector_tag == "avgpool2_4"
    assert loaded.config["projector"] == {"name": "avgpool", "mlp_depth": 2, "query_num": 4, "pooling": "avg"}
    assert loaded.model.num_visual_tokens == 4
    torch.testing.assert_close(loaded.model.projector.mlp_projector[0].weight, avgpool.mlp_projector[0].weight,
                               atol=0, rtol=0)
    ids, pv = prompt_ids(tok), pixels(2)
    ref = reference_logits(clip_dir, avgpool, llm, ids, pv, IMAGE_ID)
    assert ref.shape[1] == ids.shape[1] + 3
    torch.testing.assert_close(logits(loaded, ids, pv), ref, atol=1e-5, rtol=0)


def test_unused_keys_are_reported_and_vision_weights_ignored(root, clip_dir):
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"])
    extra = {"model.mm_projector.extra.weight": torch.zeros(2),
             "model.vision_tower.vision_tower.vision_model.post_layernorm.weight": torch.zeros(VISION["hidden_size"])}
    write_llava_original(root / "extra", clip_dir, projector, "mlp2x_gelu", extra_keys=extra)
    loaded = load_model(root / "extra")
    assert "projector:extra.weight" in loaded.report["unused"]
    assert "vision(ignored):vision_model.post_layernorm.weight" in loaded.report["unused"]
    # LLaVA semantics: the tower comes from mm_vision_tower, not from the zeros in the checkpoint
    assert float(loaded.model.vision.model.state_dict()[
        next(k for k in loaded.model.vision.model.state_dict() if k.endswith("post_layernorm.weight"))].abs().sum()) > 0


def test_shape_mismatch_names_key_and_shapes(root, clip_dir):
    wrong = mlp(VISION["hidden_size"] + 1, LLM["hidden_size"])  # 33 -> 64 while the tower is 32 wide
    write_llava_original(root / "wrong", clip_dir, wrong, "mlp2x_gelu")
    with pytest.raises(ValueError, match=r"projector\.0\.weight: checkpoint \(64, 33\) vs model \(64, 32\)"):
        load_model(root / "wrong")


def test_missing_projector_weights_are_named(root, clip_dir):
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"], layers=1)  # only `.0`, config says 2 layers
    write_llava_original(root / "short", clip_dir, projector, "mlp2x_gelu")
    with pytest.raises(ValueError, match=r"projector\.2\.bias, projector\.2\.weight"):
        load_model(root / "short")


def test_pretrain_stage_projector_only(root, clip_dir, base_dir, tmp_path):
    """LLaVA stage-1 output: config.json + mm_projector.bin; the LLM comes from the base model."""
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"], seed=9)
    base = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    from test_loading_fixtures import llava_config

    cfg = llava_config(base, "mlp2x_gelu", clip_dir)
    cfg.pop("_name_or_path", None)  # no hint in the config: the user must name the base
    (tmp_path / "config.json").write_text(json.dumps(cfg, default=str))
    torch.save({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()}, tmp_path / "mm_projector.bin")
    with pytest.raises(ValueError, match="load.base="):
        load_model(tmp_path)
    loaded = load_model(tmp_path, base=str(base_dir))
    ids, pv = prompt_ids(loaded.tokenizer), pixels(4)
    ref = reference_logits(clip_dir, projector, base, ids, pv, IMAGE_ID)
    torch.testing.assert_close(logits(loaded, ids, pv), ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- LoRA


def test_deco_avgpool_lora_matches_peft_merge(root, clip_dir, base_dir, avgpool):
    lora_dir = root / "llava-v1.5-avgpool2_4-lora"
    lora_dir.mkdir()
    state = {f"mlp_projector.{k}": v for k, v in avgpool.mlp_projector.state_dict().items()}
    write_llava_lora(lora_dir, base_dir, clip_dir, state, "avgpool2_4")
    assert detect_format(lora_dir) == "llava_lora"
    loaded = load_model(lora_dir)
    assert loaded.projector_tag == "avgpool2_4" and loaded.config["stage"]["lora"]["merged"]
    torch.testing.assert_close(loaded.model.projector.mlp_projector[2].bias, avgpool.mlp_projector[2].bias,
                               atol=0, rtol=0)

    from peft import PeftModel

    base = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    with warnings.catch_warnings():  # the reference is peft's own path, with its read of a deprecated alias
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        merged = PeftModel.from_pretrained(base, lora_dir).merge_and_unload().eval()
    ours = loaded.model.llm.state_dict()
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(ours[key], value, atol=0, rtol=0, msg=key)

    ids, pv = prompt_ids(loaded.tokenizer), pixels(3)
    ref = reference_logits(clip_dir, avgpool, merged, ids, pv, IMAGE_ID)
    torch.testing.assert_close(logits(loaded, ids, pv), ref, atol=1e-5, rtol=0)
    without = reference_logits(clip_dir, avgpool, LlamaForCausalLM.from_pretrained(base_dir), ids, pv, IMAGE_ID)
    assert (without - ref).abs().max() > 1e-2  # the adapter really changes the output

    kept = load_model(lora_dir, merge_lora=False)  # adapter kept as a peft module: same function
    assert hasattr(kept.model.llm, "merge_and_unload")
    torch.testing.assert_close(logits(kept, ids, pv), ref, atol=1e-5, rtol=0)


def test_lora_base_override_and_missing_base(root, clip_dir, base_dir, avgpool, tmp_path):
    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    state = {f"mlp_projector.{k}": v for k, v in avgpool.mlp_projector.state_dict().items()}
    write_llava_lora(lora_dir, base_dir, clip_dir, state, "avgpool2_4")
    moved = tmp_path / "elsewhere"
    base_dir.rename(moved)
    try:
        with pytest.raises(FileNotFoundError, match="LoRA base model"):
            load_model(lora_dir)
        loaded = load_model(lora_dir, base=str(moved))  # model.base=...
        assert loaded.config["model"]["base"] == str(moved)
    finally:
        moved.rename(base_dir)


def reference_llava_qformer(hidden: int, out: int, q: int, layers: int, seed: int = 7):
    """The LLaVA-fork `qformer<L>_<Q>` projector built from transformers parts (query_tokens, qformer, proj)."""
    torch.manual_seed(seed)
    cfg = Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=32,
                             intermediate_size=4 * hidden, encoder_hidden_size=hidden, cross_attention_frequency=1,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    parts = torch.nn.ModuleDict({"qformer": Blip2QFormerModel(cfg).eval(), "proj": mlp(hidden, out, seed=seed)})
    parts.query_tokens = torch.nn.Parameter(torch.randn(1, q, hidden) * 0.02)

    def forward(feats):
        queries = parts.query_tokens.expand(feats.shape[0], -1, -1)
        return parts["proj"](parts["qformer"](query_embeds=queries, encoder_hidden_states=feats).last_hidden_state)

    state = {"query_tokens": parts.query_tokens.data}
    state.update({f"qformer.{k}": v for k, v in parts["qformer"].state_dict().items()})
    state.update({f"proj.{k}": v for k, v in parts["proj"].state_dict().items()})
    return forward, state


def test_deco_qformer_lora_layout(root, clip_dir, base_dir):
    forward, state = reference_llava_qformer(VISION["hidden_size"], LLM["hidden_size"], q=9, layers=2)
    lora_dir = root / "llava-v1.5-qformer2_9-lora"
    lora_dir.mkdir()
    write_llava_lora(lora_dir, base_dir, clip_dir, state, "qformer2_9")
    loaded = load_model(lora_dir)
    assert loaded.projector_tag == "qformer2_9"
    assert isinstance(loaded.model.projector, QFormerMLPProjector)
    assert loaded.model.projector.query_num == 9 and loaded.model.projector.layer_num == 2
    feats = torch.randn(2, NUM_PATCHES, VISION["hidden_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.projector(feats), forward(feats), atol=1e-5, rtol=0)
    # R_q2i machinery still works on the variant (attention maps of every layer)
    tokens, self_attns, cross_attns = loaded.model.projector.forward_with_attentions(feats)
    assert tokens.shape == (2, 9, LLM["hidden_size"]) and len(cross_attns) == 2
    assert cross_attns[0].shape == (2, 32, 9, NUM_PATCHES)


def test_loaded_model_serves_generation(hf_dir):
    """What deco.evaluate / deco.explain use: generate, projector_tag, tokenizer with <image>, processor."""
    loaded = load_model(hf_dir)
    tok = loaded.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == loaded.model.image_token_id
    from PIL import Image

    from deco.data.image import process_image

    pv = process_image(Image.new("RGB", (70, 40), (200, 10, 10)), loaded.image_processor, loaded.config["image_aspect"])
    assert pv.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    ids = prompt_ids(tok)
    new = loaded.model.generate(ids, torch.ones_like(ids), pv[None], max_new_tokens=3, eos_token_id=tok.eos_token_id)
    # greedy decoding = argmax of a full forward at each step
    seq = ids
    for step in range(new.shape[1]):
        nxt = logits(loaded, seq, pv[None])[0, -1].argmax()
        assert int(nxt) == int(new[0, step])
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)


def test_llm_vocab_grows_to_the_tokenizer(root, clip_dir, tmp_path):
    """A tokenizer with more tokens than the LLM's rows (LLaVA adds `<image>` to Vicuna's): embeddings grow."""
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"])
    llm, tok = write_llava_original(tmp_path, clip_dir, projector, "mlp2x_gelu")
    rows = llm.get_input_embeddings().num_embeddings
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert len(loaded.tokenizer) == rows + 1
    assert loaded.model.llm.get_input_embeddings().num_embeddings == rows + 1
    assert loaded.model.llm.get_output_embeddings().weight.shape[0] == rows + 1
    torch.testing.assert_close(loaded.model.llm.get_input_embeddings().weight[:rows],
                               llm.get_input_embeddings().weight, atol=0, rtol=0)


def test_dtype_option(hf_dir):
    loaded = load_model(hf_dir, dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    ids, pv = prompt_ids(loaded.tokenizer), pixels()
    full = logits(load_model(hf_dir), ids, pv)
    half = logits(loaded, ids, pv)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)  # bf16 rounding only
    with pytest.raises(ValueError, match="dtype='half8' is unknown"):
        load_model(hf_dir, dtype="half8")
