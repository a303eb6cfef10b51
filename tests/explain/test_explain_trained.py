"""After a few dozen training steps on the shapes world, R-GAE's R_t2i favours the named object's box (slow)."""

from __future__ import annotations

import pytest
from conftest import TINY_RUN, compose_config

from deco.explain.score import score_model, shapes_probes, summarize
from deco.models.loading import load_model
from deco.train import train


@pytest.mark.slow
@pytest.mark.parametrize("projector", ["linear", "avgpool"])
def test_rgae_puts_more_mass_in_the_box_than_a_uniform_map(tmp_path, projector):
    # avgpool2_144 (2x2-patch blocks); query_num does not apply to linear (576 tokens)
    cfg = compose_config("train", [*TINY_RUN, f"projector={projector}", "query_num=144", "logger=csv",
                                   "trainer.max_steps=40", "data.train.num_samples=320", "data.batch_size=8"], tmp_path)
    train(cfg)
    loaded = load_model(tmp_path / "checkpoints" / "last.ckpt")
    probes = shapes_probes(loaded.tokenizer, loaded.image_processor, seed=1000, num_samples=12)
    rows = score_model(loaded.model, loaded.tokenizer, probes, ["rgae", "rawattn"], loaded.projector_tag,
                       perturbation=False)
    summary = {s["method"]: s for s in summarize(rows)}
    # a uniform map scores exactly the box's area share; the maps must beat it, the random map, and chance pointing
    for method in ("rgae", "rawattn"):
        assert summary[method]["energy"] > summary[method]["box_area"], method
        assert summary[method]["energy"] > summary["random"]["energy"], method
        assert summary[method]["pointing"] > summary["random"]["pointing"], method
