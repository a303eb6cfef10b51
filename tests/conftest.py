"""Shared fixtures: the real configs, composed and shrunk to run in seconds on CPU."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deco.data.image import build_image_processor
from deco.data.shapes import make_sample
from deco.data.tokenizer import build_tiny_tokenizer

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

# The tower-feature cache of `deco.train` (configs/train.yaml tower_features.cache_dir) lives under
# $DECO_CACHE_DIR: tests, and the deco.train subprocesses they start, write a temporary one, never the user's.
TEST_CACHE_DIR = tempfile.mkdtemp(prefix="deco-test-cache-")
os.environ["DECO_CACHE_DIR"] = TEST_CACHE_DIR
atexit.register(shutil.rmtree, TEST_CACHE_DIR, ignore_errors=True)
# W&B's own error telemetry off: after the W&B tests' (failed-online) runs its exporter retries their exited local
# service and printed "Transient error ... /sdk/otel/v1/metrics" x3 and "Failed to export metrics batch" after
# the suite's summary.
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")

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


def write_llava_corpus(root: Path, n_images: int = 6) -> list[dict]:
    """A small LLaVA-format corpus in `root`: data.json + img/*.jpg; returns the records.

    Images have different aspect ratios; `<image>` sits at the start, the end and the middle of the
    first turn; one record is multi-turn and two are text-only (one of them multi-turn).
    """
    (root / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_images):
        scene, conv, meta = make_sample(0, i, image_size=64)
        scene.image.resize((64 + 12 * i, 64 - 4 * i)).save(root / "img" / f"{i}.jpg", quality=90)
        question = meta["question"]
        first = [f"<image>\n{question}", f"{question}\n<image>", f"{question} <image> please"][i % 3]
        conv = [{"from": "human", "value": first}, {"from": "gpt", "value": meta["answer"]}]
        if i == 1:
            conv += [{"from": "human", "value": "Is there a red circle in the image?"}, {"from": "gpt", "value": "No."}]
        records.append({"id": f"img-{i}", "image": f"img/{i}.jpg", "conversations": conv})
    records.append(
        {
            "id": "text-0",
            "conversations": [
                {"from": "human", "value": "What colour is the circle?"},
                {"from": "gpt", "value": "Red."},
            ],
        }
    )
    records.append(
        {
            "id": "text-1",
            "conversations": [
                {"from": "human", "value": "What shape is the red object?"},
                {"from": "gpt", "value": "Circle."},
                {"from": "human", "value": "Is there a blue square in the image?"},
                {"from": "gpt", "value": "Yes."},
            ],
        }
    )
    (root / "data.json").write_text(json.dumps(records))
    return records


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 3-step tiny run (avgpool, 16 visual tokens), trained once per session (evaluation and adapter tests)."""
    from deco.train import train

    out = tmp_path_factory.mktemp("tiny_train")
    train(compose_config("train", [*TINY_RUN, "query_num=16"], out))
    return out / "checkpoints" / "last.ckpt"
