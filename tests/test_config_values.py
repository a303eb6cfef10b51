"""Settings that would train something other than what was meant fail before anything is built, naming the key."""

from __future__ import annotations

import pytest

from deco.train import train


@pytest.mark.parametrize("overrides, message", [
    (["stage.lr=-1e-3"], "stage.lr=-0.001 must be a positive number"),
    (["stage.lr=0"], "stage.lr=0 must be a positive number"),
    (["stage.projector_lr=-2e-5"], "stage.projector_lr=-2e-05 must be null or a positive number"),
    (["data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
    (["data.eval_batch_size=-4"], "data.eval_batch_size=-4 must be null or a positive integer"),
    (["data.max_length=0"], "data.max_length=0 must be a positive integer"),
    (["data.num_workers=-1"], "data.num_workers=-1 must be an integer >= 0"),
    (["stage.warmup_ratio=1.5"], "stage.warmup_ratio=1.5 must be in [0, 1)"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 must be -1 (no limit) or positive"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be a positive integer"),
    (["+stage.lrr=1e-3"], "stage.lrr is not a setting deco knows (a typo?); known keys there: "),
    (["+stage.lora.rank=8"], "stage.lora.rank is not a setting deco knows"),
    (["+data.batchsize=8"], "data.batchsize is not a setting deco knows"),
    (["+fault.on_nann=skip"], "fault.on_nann is not a setting deco knows"),
    (["+seeed=1"], "seeed is not a setting deco knows"),
    (["resume=sometimes"], "resume=sometimes is not supported"),
    (["data.image_aspect=stretch"], "data.image_aspect=stretch is unknown; choose one of: pad, resize, crop"),
])
def test_bad_setting_is_a_config_error_naming_the_key(train_config, tmp_path, overrides, message):
    with pytest.raises(SystemExit, match="Config error: ") as info:
        train(train_config(*overrides))
    assert message in str(info.value)
    assert not (tmp_path / "checkpoints").exists()


def test_known_keys_lists_siblings(train_config):
    with pytest.raises(SystemExit) as info:
        train(train_config("+stage.lrr=1e-3"))
    assert "lr, " in str(info.value) and "projector_lr" in str(info.value)


def test_experiment_presets_and_other_data_configs_pass(train_config):
    from deco.utils.config_keys import unknown_keys, value_problems

    for overrides in (["experiment=projector_study"], ["data=llava_json"], ["data=wds"], ["stage=finetune_lora"]):
        cfg = train_config(*overrides)
        assert unknown_keys(cfg) == [] and value_problems(cfg) == [], overrides
