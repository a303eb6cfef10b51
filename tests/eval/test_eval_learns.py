"""End to end: `make train` as typed (the default config: the zoo finetuned on the shapes world) reads the image.

The default run (~8-10 min on 2 CPU cores), then `deco.evaluate` on 200 held-out questions per task. A model
that ignores the image scores ~50% on existence (half the questions are about absent objects, answered
all-yes or all-no) and ~25% on attribute (the blind best over colours and shapes); grounding needs the
object's place. Thresholds sit below the measured values (experiments/zoo/README.md) so noise does not flake.
"""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

from deco.evaluate import evaluate
from deco.train import train

# benchmark -> (headline metric, threshold); measured values are in the closing comment of each
THRESHOLDS = {"shapes_existence": ("accuracy", EXISTENCE_MIN := 60.0),
              "shapes_attribute": ("accuracy", ATTRIBUTE_MIN := 60.0)}


@pytest.mark.slow
def test_make_train_as_typed_reads_the_image(tmp_path):
    train(compose_config("train", ["logger=none"], tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    results = {}
    for bench in (*THRESHOLDS, "shapes_grounding"):
        evaluate(compose_config("evaluate", [f"ckpt={ckpt}", f"benchmark={bench}", "logger=none", "progress=false"],
                                tmp_path / bench))
        results[bench] = json.loads((tmp_path / bench / "metrics.json").read_text())
    for bench, (metric, minimum) in THRESHOLDS.items():
        assert results[bench]["num_questions"] == 200
        assert results[bench]["metrics"][metric] > minimum, (bench, results[bench]["metrics"])
    existence = results["shapes_existence"]["metrics"]
    assert 20 < existence["yes_ratio"] < 80, existence  # it answers both ways, by what it sees
    assert results["shapes_grounding"]["metrics"]["unparsed"] < 20  # boxes come out well formed
