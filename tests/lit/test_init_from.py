"""`init_from` a checkpoint of another projector is an error unless asked for; a good one says what it loaded."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import TINY_RUN, compose_config
from deco.train import train

FAST = [*TINY_RUN, "stage=pretrain", "query_num=16", "trainer.max_steps=1"]


@pytest.fixture(scope="module")
def linear_ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("linear")
    train(compose_config("train", [*FAST, "projector=linear"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("projector", ["avgpool", "mlp2x_gelu"])
def test_init_from_another_projector_is_an_error_naming_the_keys(tmp_path, linear_ckpt, projector):
    with pytest.raises(SystemExit, match=rf"init_from={linear_ckpt} does not fit this model \(the checkpoint was "
                                         r"trained with projector=linear\): .* would keep their random "
                                         r"initialisation \(projector\..*init_from_strict=false"):
        train(compose_config("train", [*FAST, f"projector={projector}", f"init_from={linear_ckpt}"], tmp_path))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_init_from_strict_false_trains_the_missing_parts_and_says_so(tmp_path, linear_ckpt, caplog):
    with caplog.at_level(logging.INFO, logger="deco.lit.init_from"):
        train(compose_config("train", [*FAST, "projector=avgpool", f"init_from={linear_ckpt}",
                                       "init_from_strict=false"], tmp_path))
    text = caplog.text
    assert "parameters keep their random initialisation (init_from_strict=false): projector." in text
    assert "checkpoint tensors were not used (init_from_strict=false)" in text
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_init_from_same_model_logs_what_it_loaded(tmp_path, linear_ckpt, caplog):
    with caplog.at_level(logging.INFO, logger="deco.lit.init_from"):
        train(compose_config("train", [*FAST, "projector=linear", f"init_from={linear_ckpt}"], tmp_path))
    n = len(torch.load(linear_ckpt, weights_only=True)["state_dict"])
    assert f"init_from {linear_ckpt} (global step 1): loaded {n} tensors" in caplog.text
    assert "'projector':" in caplog.text and "'llm':" in caplog.text and "'vision':" in caplog.text
