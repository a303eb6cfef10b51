"""End to end: `make train` as typed (the default config: the zoo finetuned on the shapes world) reads the image.

The default run (400 steps, ~7-10 min on 2 CPU cores), then `deco.evaluate` on 200 held-out questions per task.
A model that ignores the image scores ~25% on attribute (the blind best over colours and shapes) and cannot
caption the scene. Measured (seed 42, experiments/zoo/README.md): attribute 81.0, caption CIDEr 685, grounding
Acc@0.5 5.0, existence 51.0 (always "yes"). The issue's targets for existence (90) and grounding (50) are NOT
reached; this test asserts what the run does reach, below the measured values so noise does not flake.
"""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

from deco.evaluate import evaluate
from deco.train import train


@pytest.mark.slow
def test_make_train_as_typed_reads_the_image(tmp_path):
    train(compose_config("train", ["logger=none"], tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    results = {}
    for bench in ("shapes_attribute", "shapes_caption", "shapes_grounding"):
        evaluate(compose_config("evaluate", [f"ckpt={ckpt}", f"benchmark={bench}", "logger=none", "progress=false"],
                                tmp_path / bench))
        results[bench] = json.loads((tmp_path / bench / "metrics.json").read_text())
        assert results[bench]["num_questions"] == 200
    assert results["shapes_attribute"]["metrics"]["accuracy"] > 70, results["shapes_attribute"]  # blind: ~25
    assert results["shapes_caption"]["metrics"]["cider"] > 300, results["shapes_caption"]
    assert results["shapes_grounding"]["metrics"]["unparsed"] == 0  # boxes come out well formed
