"""Shared fixtures: the real configs, composed and shrunk to run in seconds on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deco.data.image import build_image_processor
from deco.data.tokenizer import build_tiny_tokenizer

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

# A run small enough for a unit test: a few samples, few steps, no workers, no logger.
TINY_RUN = [
    "data.train.num_samples=12",  # 3 steps of 4, then validation at epoch end
    "data.val.num_samples=8",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "data.max_length=128",
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "logger=none",
]


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    """Compose `configs/<config_name>.yaml` as the CLI would, with the run dir set to `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.fixture
def train_config(tmp_path):
    """Factory: train config with TINY_RUN applied plus the given overrides."""

    def make(*overrides: str):
        return compose_config("train", [*TINY_RUN, *overrides], tmp_path)

    return make


@pytest.fixture(scope="module")
def tok():
    """The tiny tokenizer (data tests)."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def proc():
    """A small (28 px) CLIP image processor (data tests)."""
    return build_image_processor(image_size=28)
