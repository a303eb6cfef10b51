"""The LLaVA-1.5 / DeCo presets hold LLaVA-1.5's published hyperparameters.

LLAVA below is a transcription of haotian-liu/LLaVA scripts/v1_5/pretrain.sh, finetune.sh and
finetune_lora.sh (and the README's global batch sizes: 256 / 128 on 8 GPUs); each preset is composed
as `python -m deco.train experiment=...` would compose it and compared key by key (docs/recipes.md has
the same mapping as a table). The DeCo presets must differ from LLaVA's only in the projector.
"""

from __future__ import annotations

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from deco.lit.sampling import accumulation_for
from deco.models.formats.projector_type import paper_depth
from deco.utils.config_keys import unknown_keys

LLAVA = {
    "pretrain": {"version": "plain", "learning_rate": 1e-3, "mm_projector_lr": None, "global_batch": 256,
                 "per_device_train_batch_size": 32, "num_train_epochs": 1, "weight_decay": 0.0,
                 "warmup_ratio": 0.03, "model_max_length": 2048, "bf16": True, "gradient_checkpointing": True,
                 "image_aspect_ratio": "square", "group_by_modality_length": False, "tune_llm": False,
                 "lora": None, "deepspeed": "zero2"},
    "finetune": {"version": "v1", "learning_rate": 2e-5, "mm_projector_lr": None, "global_batch": 128,
                 "per_device_train_batch_size": 16, "num_train_epochs": 1, "weight_decay": 0.0,
                 "warmup_ratio": 0.03, "model_max_length": 2048, "bf16": True, "gradient_checkpointing": True,
                 "image_aspect_ratio": "pad", "group_by_modality_length": True, "tune_llm": True,
                 "lora": None, "deepspeed": "zero3"},
    "finetune_lora": {"version": "v1", "learning_rate": 2e-4, "mm_projector_lr": 2e-5, "global_batch": 128,
                      "per_device_train_batch_size": 16, "num_train_epochs": 1, "weight_decay": 0.0,
                      "warmup_ratio": 0.03, "model_max_length": 2048, "bf16": True, "gradient_checkpointing": True,
                      "image_aspect_ratio": "pad", "group_by_modality_length": True, "tune_llm": False,
                      "lora": {"r": 128, "alpha": 256, "dropout": 0.05}, "deepspeed": "zero3"},
}
TEMPLATES = {"plain": "plain", "v1": "vicuna_v1"}            # --version -> deco's template name
ASPECTS = {"square": "crop", "pad": "pad"}                   # --image_aspect_ratio -> data.image_aspect
PRESETS = [("llava15_pretrain", "pretrain", "mlp2x_gelu", 576), ("llava15_finetune", "finetune", "mlp2x_gelu", 576),
           ("llava15_finetune_lora", "finetune_lora", "mlp2x_gelu", 576),
           ("deco_avgpool144_pretrain", "pretrain", "avgpool", 144),
           ("deco_avgpool144_finetune", "finetune", "avgpool", 144),
           ("deco_qformer144_pretrain", "pretrain", "qformer", 144),
           ("deco_qformer144_finetune", "finetune", "qformer", 144)]


def compose(name: str, tmp_path):
    return compose_config("train", [f"experiment={name}", "data.json_path=/data/x.json"], tmp_path)


@pytest.mark.parametrize("name,script,projector,query_num", PRESETS)
def test_preset_matches_llava15_scripts(name, script, projector, query_num, tmp_path):
    cfg = compose(name, tmp_path)
    ref = LLAVA[script]
    stage, data, trainer = cfg.stage, cfg.data, cfg.trainer
    assert stage.template == TEMPLATES[ref["version"]]
    assert stage.lr == ref["learning_rate"]
    assert (stage.projector_lr or stage.lr) == (ref["mm_projector_lr"] or ref["learning_rate"])
    assert stage.weight_decay == ref["weight_decay"] and stage.warmup_ratio == ref["warmup_ratio"]
    assert stage.loss_reduction == "token"  # transformers' LlamaForCausalLM loss: mean over the batch's tokens
    assert bool(stage.train_llm) == ref["tune_llm"] and not stage.train_vision
    if ref["lora"]:
        assert stage.lora.enabled and {k: stage.lora[k] for k in ("r", "alpha", "dropout")} == ref["lora"]
        assert stage.lora.target_modules is None  # find_all_linear_names: every Linear but lm_head
    else:
        assert not stage.lora.enabled
    assert data.global_batch_size == ref["global_batch"] and data.batch_size == ref["per_device_train_batch_size"]
    assert data.max_length == ref["model_max_length"] == cfg.model.tokenizer.model_max_length
    assert data.image_aspect == ASPECTS[ref["image_aspect_ratio"]]
    assert bool(data.get("group_by_modality_length")) == ref["group_by_modality_length"]
    assert trainer.precision == ("bf16-mixed" if ref["bf16"] else "32-true")
    assert trainer.max_epochs == ref["num_train_epochs"] and trainer.max_steps == -1
    assert trainer.gradient_clip_val == 1.0  # HF Trainer's max_grad_norm
    assert cfg.model.gradient_checkpointing is ref["gradient_checkpointing"]
    # ZeRO-3 shards the trained LLM: FSDP full shard (which checkpoints the decoder layers itself).
    strategy = trainer.strategy
    if ref["deepspeed"] == "zero3" and ref["tune_llm"]:
        assert strategy.sharding_strategy == "FULL_SHARD" and strategy.activation_checkpointing
    else:
        assert strategy == "ddp"
    assert cfg.model.name == "llava15_7b" and cfg.model.llm.name_or_path == "lmsys/vicuna-7b-v1.5"
    assert cfg.model.vision.name_or_path == "openai/clip-vit-large-patch14-336" and cfg.model.vision.select_layer == -2
    assert cfg.projector.name == projector and cfg.query_num == query_num
    if projector != "mlp2x_gelu":
        assert paper_depth(cfg.projector) == 2  # the paper's avgpool2_144 (mlp_depth) / qformer2_144 (layer_num)
    assert unknown_keys(OmegaConf.to_container(cfg, resolve=False)) == []


@pytest.mark.parametrize("name,script", [("llava15_pretrain", "pretrain"), ("llava15_finetune", "finetune"),
                                         ("llava15_finetune_lora", "finetune_lora")])
@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_effective_batch_is_the_published_one_on_any_device_count(name, script, devices, tmp_path):
    cfg = compose(name, tmp_path)
    accumulate = accumulation_for(cfg.data.global_batch_size, cfg.data.batch_size, devices)
    assert cfg.data.batch_size * devices * accumulate == LLAVA[script]["global_batch"]
    if devices == 8:  # the script's own layout: 8 GPUs x per-device batch x accumulation 1
        assert accumulate == 1


def test_deco_presets_differ_from_llava_only_in_the_projector(tmp_path):
    for stage in ("pretrain", "finetune"):
        base = OmegaConf.to_container(compose(f"llava15_{stage}", tmp_path), resolve=False)
        for projector in ("avgpool", "qformer"):
            deco = OmegaConf.to_container(compose(f"deco_{projector}144_{stage}", tmp_path), resolve=False)
            differing = sorted(k for k in set(base) | set(deco) if base.get(k) != deco.get(k))
            assert differing == ["projector", "query_num", "task_name"], (stage, projector, differing)
