"""Export: documented file names, readable PNGs, tensors with the right shapes (.pt and .npz); rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_helpers import tiny_model
from PIL import Image

from deco.data.shapes import render_scene
from deco.explain.export import export_relevance, load_relevance, slugify
from deco.explain.inputs import build_input
from deco.explain.methods import explain
from deco.explain.render import normalize_map, overlay, render_q2i


@pytest.fixture(scope="module")
def avgpool_relevance():
    model, tokenizer, processor = tiny_model("avgpool")
    inp = build_input(tokenizer, processor, render_scene(1000, 3).image, "A pot of green plants")
    return inp, explain(model, inp, "rgae", tokenizer)


def test_slugify():
    assert slugify("A pot of green plants") == "A-pot-of-green-plants"
    assert slugify("[0.59, 0.21, 0.84, 0.46]") == "0-59-0-21-0-84-0-46"
    assert slugify("  ?? ") == "text"
    assert len(slugify("word " * 40)) <= 60


@pytest.mark.parametrize("fmt", ["pt", "npz"])
def test_export_writes_named_readable_files(avgpool_relevance, tmp_path, fmt):
    inp, rel = avgpool_relevance
    files = export_relevance(rel, inp, tmp_path, "avgpool2_16", tensor_format=fmt)
    names = {kind: path.name for kind, path in files.items()}
    assert names == {
        "R_t2i": "R_t2i-rgae-A-pot-of-green-plants-avgpool2_16.png",
        "R_t2q": "R_t2q-rgae-A-pot-of-green-plants-avgpool2_16.png",
        "R_q2i": "R_q2i-rgae-A-pot-of-green-plants-avgpool2_16.png",
        "tensors": f"relevance-rgae-A-pot-of-green-plants-avgpool2_16.{fmt}",
    }
    for kind in ("R_t2i", "R_t2q", "R_q2i"):
        with Image.open(files[kind]) as img:
            img.load()
            assert img.format == "PNG" and img.width > 100 and img.height > 100
    # R_q2i grid: 16 queries -> 4 x 4 cells of 84 px + 2 px gaps
    assert Image.open(files["R_q2i"]).size == (4 * 86 + 2, 4 * 86 + 2)
    data = load_relevance(files["tensors"])
    assert data["r_t2i"].shape == (24, 24) and data["r_t2q"].shape == (16,) and data["r_q2i"].shape == (16, 576)
    assert data["r_t2q_tokens"].shape == (11, 16) and data["r_t2i_tokens"].shape == (11, 24, 24)
    assert data["method"] == "rgae" and data["tag"] == "avgpool2_16" and data["text"] == "A pot of green plants"
    assert list(data["target_tokens"])[:2] == ["A", " p"]
    torch.testing.assert_close(data["r_t2i"].flatten(), data["r_t2q"] @ data["r_q2i"])
    assert len(list(tmp_path.iterdir())) == 4  # atomic writes leave no temporary files


def test_export_rejects_unknown_format(avgpool_relevance, tmp_path):
    inp, rel = avgpool_relevance
    with pytest.raises(ValueError, match="tensor_format='h5' is unknown"):
        export_relevance(rel, inp, tmp_path, "x", tensor_format="h5")


def test_overlay_puts_the_hot_colour_where_the_map_peaks():
    image = Image.new("RGB", (48, 48), (128, 128, 128))
    rel = torch.zeros(4, 4)
    rel[3, 0] = 1.0  # bottom-left patch
    out = np.asarray(overlay(image, rel, alpha=1.0))
    # jet: 1.0 is dark red, 0.0 dark blue
    assert out[42, 6, 0] > 100 and out[42, 6, 2] < 50
    assert out[6, 42, 2] > 100 and out[6, 42, 0] < 50
    assert torch.equal(normalize_map(torch.ones(3, 3)), torch.zeros(3, 3))


def test_render_q2i_shows_the_most_relevant_queries_first():
    r_q2i = torch.eye(576)
    order = torch.zeros(576)
    order[100] = 2.0
    order[7] = 1.0
    grid = np.asarray(render_q2i(r_q2i, None, order=order, max_queries=4, cell=48))
    assert grid.shape == (2 * 50 + 2, 2 * 50 + 2, 3)
    # first cell is query 100 = patch (4, 4): hottest at that patch's spot (48 px / 24 patches = 2 px each)
    first = grid[2 : 2 + 48, 2 : 2 + 48]
    assert first[4 * 2 + 1, 4 * 2 + 1, 0] > 100  # red-ish where patch (4, 4) is
    assert first[40, 40, 2] > 100  # blue elsewhere
