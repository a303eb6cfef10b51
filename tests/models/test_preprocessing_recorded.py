"""A checkpoint records every preprocessing choice of its training, and every loader uses them by default.

Before, `deco/train.py` saved only the model and projector configs and `deco.models.loading` fell back to
`pad`: a model trained with `data.image_aspect=resize` was evaluated, explained and served padded.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import TINY_RUN, compose_config

from deco.models.loading import load_model, trained_image_aspect


@pytest.fixture(scope="module")
def resize_ckpt(tmp_path_factory):
    from deco.train import train

    out = tmp_path_factory.mktemp("resize_run")
    train(
        compose_config(
            "train",
            [*TINY_RUN, "trainer.max_steps=1", "data.train.num_samples=4", "query_num=16", "data.image_aspect=resize"],
            out,
        )
    )
    return out / "checkpoints" / "last.ckpt"


def test_checkpoint_records_aspect_template_and_image_size(resize_ckpt):
    build = torch.load(resize_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["build"]
    assert build["preprocessing"] == {"image_aspect": "resize", "template": "vicuna_v1_qfirst", "image_size": 336}


def test_loaders_use_the_trained_preprocessing(resize_ckpt, tmp_path):
    loaded = load_model(resize_ckpt)
    assert loaded.config["image_aspect"] == "resize"  # was "pad"
    assert loaded.config["stage"]["template"] == "vicuna_v1_qfirst"
    assert loaded.image_processor.crop_size == {"height": 336, "width": 336}
    from deco.models.formats.deco_pretrained import save_deco_pretrained

    save_deco_pretrained(loaded, tmp_path / "exported")  # an export keeps them
    again = load_model(tmp_path / "exported")
    assert again.config["image_aspect"] == "resize"
    assert again.config["stage"]["template"] == "vicuna_v1_qfirst"


def test_a_checkpoint_without_a_record_assumes_pad_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="deco.models.loading"):
        assert trained_image_aspect({"model": {}, "projector": {}}, "old.ckpt") == "pad"
    assert "records no image aspect" in caplog.text and "image_aspect=" in caplog.text
    assert trained_image_aspect({"preprocessing": {"image_aspect": "crop"}}, "new.ckpt") == "crop"
