"""Relevance on zoo-trained models: R-GAE puts more mass in the asked object's box than a random map.

Each projector is finetuned from the zoo with the default recipe for 200 steps (slow: ~3-12 min each on 2
CPU cores), then scored on 32 held-out scenes (`deco.explain mode=score`): energy in the asked object's box
for R-GAE against the random baseline, whose energy equals the box's share of the image (~0.08).
"""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

from deco.explain.__main__ import run
from deco.train import train


@pytest.mark.slow
@pytest.mark.parametrize("projector,query_num", [("avgpool", 64), ("qformer", 64), ("linear", 576)])
def test_rgae_beats_a_random_map_on_a_zoo_trained_model(projector, query_num, tmp_path):
    train(compose_config("train", [f"projector={projector}", f"query_num={query_num}", "trainer.max_steps=200",
                                   "data.train.num_samples=6400", "logger=none"], tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    run(compose_config("explain", [f"ckpt={ckpt}", "mode=score", "score.probes=[shapes]", "score.perturbation=false",
                                   "score.methods=[rgae]", "device=cpu", "progress=false"], tmp_path / "score"))
    summary = {row["method"]: row for row in json.loads((tmp_path / "score" / "summary.json").read_text())}
    assert summary["rgae"]["n"] == summary["random"]["n"] >= 32
    assert summary["rgae"]["energy"] > summary["random"]["energy"] + 0.05, summary
