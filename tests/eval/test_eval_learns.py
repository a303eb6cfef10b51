"""End to end: the tiny model, trained briefly on the shapes world, answers existence questions above chance.

`experiment=shapes_existence` (~5 min on 2 CPU cores) then `deco.evaluate benchmark=shapes_existence` on 200
held-out questions, half of them about absent objects. A model that ignores the image can only answer by
the question's words and scores ~50% (in the same run without looking it stays at the text-only loss),
with all or none of its answers "yes"; P(accuracy > 0.6 | coin flips) < 0.3%.
"""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

from deco.evaluate import evaluate
from deco.train import train


@pytest.mark.slow
def test_briefly_trained_tiny_model_answers_existence_above_chance(tmp_path):
    train(compose_config("train", ["experiment=shapes_existence", "logger=none"], tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    evaluate(compose_config("evaluate", [f"ckpt={ckpt}", "benchmark=shapes_existence", "logger=none",
                                         "progress=false"], tmp_path / "eval"))

    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert summary["num_questions"] == 200
    # percentages; measured: accuracy 69, yes_ratio 68 (seed 42, 2 CPU cores)
    assert metrics["accuracy"] > 60, metrics
    assert 20 < metrics["yes_ratio"] < 80, metrics  # it answers both ways, by what it sees
    assert metrics["unclear"] == 0, metrics  # every answer read as yes or no
