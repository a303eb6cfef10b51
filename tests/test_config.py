"""Bad configs fail in validation, before any model is built, with a message naming the key."""

import pytest

from deco.utils.config import ConfigError, validate_train_config, vision_patch_count


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["projector=avgpool", "query_num=150"], "query_num=150 is not a perfect square"),
        (["projector=maxpool", "query_num=10"], "query_num=10 is not a perfect square"),
        (["projector=qformer", "query_num=1000"], "query_num=1000 is larger than the vision tower's 576 patches"),
        (["projector=avgpool", "query_num=0"], "query_num=0 must be a positive integer"),
        (["projector.name=perceiver"], "projector=perceiver is unknown; choose one of: "),
        (["pooling.name=median"], "pooling=median is unknown; choose one of: avg, max"),
        (["model.llm.name_or_path=/no/such/llm"], "model.llm.name_or_path=/no/such/llm: no such file or directory"),
        (["stage.template=llama3"], "stage.template=llama3 is unknown; choose one of: "),
        (["init_from=/no/such.ckpt"], "init_from=/no/such.ckpt: no such file"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(train_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_config(*overrides))
    assert message in str(error.value)


def test_unknown_projector_lists_the_registered_ones(train_config):
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_config("projector.name=perceiver"))
    for name in ("avgpool", "linear", "maxpool", "mlp2x_gelu", "qformer"):
        assert name in str(error.value)


def test_square_error_lists_allowed_values(train_config):
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_config("query_num=150"))
    assert "1, 4, 9, 16" in str(error.value) and str(error.value).endswith("576")


@pytest.mark.parametrize(
    "overrides",
    [
        ["projector=avgpool", "query_num=144"],
        ["projector=avgpool", "query_num=64"],
        ["projector=maxpool"],
        ["projector=avgpool", "pooling=max"],
        ["projector=qformer", "query_num=64"],
        ["projector=qformer", "query_num=50"],
        ["projector=linear"],
        ["projector=mlp2x_gelu"],
    ],
)
def test_valid_configs_pass(train_config, overrides):
    validate_train_config(train_config(*overrides))


def test_query_num_is_interpolated_and_pooling_group_applies(train_config):
    cfg = train_config("projector=avgpool", "query_num=64", "pooling=max")
    assert cfg.projector.query_num == 64 and cfg.projector.pooling == "max"
    cfg = train_config("projector=maxpool")
    assert cfg.projector.pooling == "max"
    cfg = train_config("projector=maxpool", "pooling=avg")  # the command line wins over the preset
    assert cfg.projector.pooling == "avg"


def test_patch_count_from_config_or_hub_name():
    assert vision_patch_count({"config": {"image_size": 336, "patch_size": 14}}) == 576
    assert vision_patch_count({"config": None, "name_or_path": "openai/clip-vit-large-patch14-336"}) == 576
    assert vision_patch_count({"config": None, "name_or_path": "some/unknown-tower"}) is None


@pytest.mark.parametrize("choice", ["callbacks=relevance", "callbacks=[default,relevance]"])
def test_the_relevance_callbacks_keep_the_default_ones(train_config, choice):
    """`callbacks=relevance`, as the README's config table reads, adds to the checkpoints instead of replacing them."""
    default = set(train_config().callbacks)
    assert {"model_checkpoint", "last_checkpoint", "jsonl_metrics", "preemption"} <= default
    assert set(train_config(choice).callbacks) == default | {"relevance"}


def test_a_run_without_a_checkpoint_callback_says_so(caplog, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from deco.lit.callbacks import Throughput
    from deco.train import warn_without_checkpoints

    with caplog.at_level("WARNING", logger="deco.train"):
        assert warn_without_checkpoints([Throughput()], tmp_path)
        assert not warn_without_checkpoints([Throughput(), ModelCheckpoint(dirpath=tmp_path)], tmp_path)
    assert caplog.text.count("saves no checkpoint") == 1
