"""`deco.lit.resume.check_same_model` refuses every resume that would continue a different model, key by key.

Both branches: a checkpoint of this run dir (compared with the run's saved config.yaml) and a checkpoint of
another run (compared with its own hyper-parameters). Each key that fixes the model, what trains or what
the model reads (stage name, trained parts, LoRA, template) is changed alone and must be named in the refusal.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from deco.lit.resume import CHECKPOINT_KEYS, MODEL_KEYS, STAGE_KEYS, check_same_model

RUN = {
    "model": {"name": "tiny", "llm": {"name_or_path": "zoo:tiny/llm"}},
    "projector": {"name": "avgpool", "query_num": 64, "pooling": "avg", "mlp_depth": 2},
    "pooling": {"name": "avg"},
    "query_num": 64,
    "stage": {
        "name": "finetune",
        "train_vision": False,
        "train_llm": True,
        "lora": {"enabled": False, "r": 8},
        "template": "vicuna_v1_qfirst",
        "lr": 5e-4,
    },
    "trainer": {"max_steps": 800},
}
# One change per guarded key: (dotted key, new value).
CHANGES = [
    ("model.llm.name_or_path", "zoo:other/llm"),
    ("projector.name", "qformer"),
    ("pooling.name", "max"),
    ("query_num", 144),
    ("stage.name", "finetune_lora"),
    ("stage.train_vision", True),
    ("stage.train_llm", False),
    ("stage.lora.enabled", True),
    ("stage.template", "vicuna_v1"),
]


def changed(key: str, value) -> dict:
    out = copy.deepcopy(RUN)
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[leaf] = value
    return out


def test_every_guarded_key_has_a_change_here():
    """A key added to MODEL_KEYS needs its own case below (and the other-run branch covers the stage ones)."""
    covered = {g for g in MODEL_KEYS if any(k == g or k.startswith(g + ".") for k, _ in CHANGES)}
    assert covered == set(MODEL_KEYS)
    assert set(STAGE_KEYS) <= set(CHECKPOINT_KEYS) and set(STAGE_KEYS) <= set(MODEL_KEYS)


def this_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(RUN))
    return tmp_path / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("key,value", CHANGES, ids=[k for k, _ in CHANGES])
def test_a_resume_of_this_run_with_one_model_key_changed_is_refused(tmp_path, key, value):
    ckpt = this_run(tmp_path)
    with pytest.raises(ValueError, match=rf"refusing to resume .*config.yaml -> this command\): {key}: "):
        check_same_model(changed(key, value), {}, ckpt, tmp_path)


def test_a_resume_of_this_run_with_other_settings_is_allowed(tmp_path):
    ckpt = this_run(tmp_path)
    check_same_model(changed("trainer.max_steps", 1600), {}, ckpt, tmp_path)
    check_same_model(changed("stage.lr", 1e-4), {}, ckpt, tmp_path)


def other_run_checkpoint() -> dict:
    return {
        "hyper_parameters": {"build": {"model": RUN["model"], "projector": RUN["projector"]}, "stage": RUN["stage"]}
    }


OTHER_RUN_CHANGES = [(k, v) for k, v in CHANGES if not k.startswith(("pooling", "query_num"))]


@pytest.mark.parametrize("key,value", OTHER_RUN_CHANGES, ids=[k for k, _ in OTHER_RUN_CHANGES])
def test_a_checkpoint_of_another_run_into_another_model_is_refused(tmp_path, key, value):
    """ckpt_path= a checkpoint outside this run dir: compared with its own build config and stage."""
    elsewhere = tmp_path / "other" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=rf"{elsewhere} \(its hyper-parameters\) -> this command\): {key}: "):
        check_same_model(changed(key, value), other_run_checkpoint(), elsewhere, tmp_path / "run")


def test_a_checkpoint_of_another_run_into_the_same_model_is_allowed(tmp_path):
    elsewhere = tmp_path / "other" / "checkpoints" / "last.ckpt"
    check_same_model(changed("trainer.max_steps", 5), other_run_checkpoint(), elsewhere, tmp_path / "run")


def test_a_run_saved_before_mlp_depth_was_renamed_resumes(tmp_path):
    """A run dir or checkpoint that stored avgpool's MLP depth as `layer_num` (before issue 28) is the same model
    as this command's `mlp_depth`; a real depth change is still refused."""
    old = copy.deepcopy(RUN)
    old["projector"]["layer_num"] = old["projector"].pop("mlp_depth")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_model(RUN, {}, tmp_path / "checkpoints" / "last.ckpt", tmp_path)
    elsewhere = tmp_path / "other" / "checkpoints" / "last.ckpt"
    hparams = {
        "hyper_parameters": {"build": {"model": old["model"], "projector": old["projector"]}, "stage": RUN["stage"]}
    }
    check_same_model(RUN, hparams, elsewhere, tmp_path / "run")
    with pytest.raises(ValueError, match="projector.mlp_depth: 2 -> 3"):
        check_same_model(changed("projector.mlp_depth", 3), hparams, elsewhere, tmp_path / "run")
