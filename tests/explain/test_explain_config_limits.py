"""`deco.explain` settings that cannot work are config errors naming the key (issue 29, item 8)."""

from __future__ import annotations

import pytest
from conftest import compose_config
from explain_helpers import scene_image, trained_run

from deco.explain.__main__ import run

FLAGS = ["device=cpu", "progress=false"]


def test_counts_below_one_are_config_errors(tmp_path):
    ckpt = tmp_path / "any.ckpt"
    ckpt.write_bytes(b"")  # never loaded: the settings fail first
    image = scene_image(tmp_path)
    cases = [(["max_queries=0"], r"max_queries=0 must be a whole number >= 1"),
             (["ig_steps=-2"], r"ig_steps=-2 must be a whole number >= 1"),
             (["data=shapes", "num_samples=-1"], r"num_samples=-1 must be >= 1, or null for every sample"),
             (["data=shapes", "num_samples=0"], r"num_samples=0 must be >= 1"),
             (["mode=score", "score.num_samples=0"], r"score.num_samples=0 must be a whole number >= 1")]
    for overrides, message in cases:
        cfg = compose_config("explain", [f"ckpt={ckpt}", f"image={image}", "text=red", *overrides, *FLAGS],
                             tmp_path / "out")
        with pytest.raises(SystemExit, match=f"^Config error: {message}"):
            run(cfg)


def test_a_text_longer_than_the_model_reads_is_a_config_error(tmp_path):
    ckpt = trained_run() / "checkpoints" / "last.ckpt"
    text = "red circle " * 1000  # ~2000 tokens; the tiny model reads 1024 positions (16 of them visual)
    cfg = compose_config("explain", [f"ckpt={ckpt}", f"image={scene_image(tmp_path)}", f"text='{text.strip()}'",
                                     "method=rawattn", *FLAGS], tmp_path / "out")
    with pytest.raises(SystemExit, match=r"^Config error: text= with its question is too long for .*last.ckpt: "
                                         r"sample has \d{4} tokens > max_length=1009 .* beside its 16 visual tokens"):
        run(cfg)
    assert not list((tmp_path / "out").glob("*.png"))
