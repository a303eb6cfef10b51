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
    # R_q2i grid: 16 queries -> 4 x 4 cells of 84 px + 2 px gaps, under a 34 px title strip with its colour bar
    assert Image.open(files["R_q2i"]).size == (4 * 86 + 2, 34 + 4 * 86 + 2)
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
    # viridis: 1.0 is yellow (253, 231, 37), 0.0 dark purple (68, 1, 84)
    assert out[42, 6, 0] > 200 and out[42, 6, 1] > 200 and out[42, 6, 2] < 80
    assert out[6, 42, 0] < 100 and out[6, 42, 1] < 30 and out[6, 42, 2] > 60
    assert torch.equal(normalize_map(torch.ones(3, 3)), torch.zeros(3, 3))
    # the image under the heat is grey: a pure red image gives equal channels where alpha leaves it
    grey = np.asarray(overlay(Image.new("RGB", (8, 8), (255, 0, 0)), torch.zeros(2, 2), alpha=0.0))
    assert grey[0, 0, 0] == grey[0, 0, 1] == grey[0, 0, 2]


def test_render_q2i_shows_the_most_relevant_queries_first():
    r_q2i = torch.eye(576)
    order = torch.zeros(576)
    order[100] = 2.0
    order[7] = 1.0
    grid = np.asarray(render_q2i(r_q2i, None, order=order, max_queries=4, cell=48))
    header = 34  # the title strip and its colour bar
    assert grid.shape == (header + 2 * 50 + 2, 2 * 50 + 2, 3)
    assert (grid[:header] < 100).any()  # the title's dark text
    # first cell is query 100 = patch (4, 4): hottest at that patch's spot (48 px / 24 patches = 2 px each)
    first = grid[header + 2 : header + 2 + 48, 2 : 2 + 48]
    assert first[4 * 2 + 1, 4 * 2 + 1, 0] > 200  # yellow where patch (4, 4) is
    assert first[20, 40, 2] > 60 and first[20, 40, 0] < 100  # dark purple elsewhere
    # its index is written bottom-left, white on a black box
    label = first[30:, :20]
    assert (label == 0).all(axis=-1).any() and (label > 200).all(axis=-1).any()
    untitled = np.asarray(render_q2i(r_q2i, None, order=order, max_queries=4, cell=48, title=None))
    assert untitled.shape == (2 * 50 + 2, 2 * 50 + 2, 3)


def test_render_q2i_draws_every_cell_on_one_scale():
    """A near-uniform query is dim beside a focused one (per-cell min-max made both look equally focused)."""
    focused = torch.zeros(16)
    focused[5] = 1.0
    near_uniform = torch.full((16,), 1.0)
    near_uniform[5] = 1.2
    grid = np.asarray(render_q2i(torch.stack([focused, near_uniform]), None, cell=32, title=None))
    first, second = grid[2:34, 2:34].astype(int), grid[2:34, 36:68].astype(int)
    # patch 5 = grid cell (1, 1) of 4 x 4: 8 px each; the same spot, the same colour map, one scale
    assert first[12, 12, 0] > 200 and second[12, 12, 0] < 120  # yellow vs dark: 16x vs 1.2x the row mean


def test_t2q_figure_names_itself_and_scales_its_token_panel():
    from deco.explain.render import t2q_figure

    fig = t2q_figure(torch.rand(16), torch.rand(3, 16), ["Red", ".", "</s>"], title="avgpool2_16")
    assert fig._suptitle.get_text().startswith("R_t2q") and "avgpool2_16" in fig._suptitle.get_text()
    token_ax = next(ax for ax in fig.axes if ax.get_title() == "per target token")
    assert min(t.get_fontsize() for t in token_ax.get_yticklabels()) >= 9
    assert sum(ax.get_ylabel() == "relevance / mean (1 = uniform)" for ax in fig.axes) == 2  # token panel + grid bars


def test_flat_map_is_said_on_the_figure_and_in_the_log(caplog):
    from deco.explain.render import is_flat, render_t2i

    assert is_flat(torch.zeros(4, 4)) and is_flat(torch.full((3, 3), 0.25)) and not is_flat(torch.eye(3))
    image = Image.new("RGB", (48, 48), (128, 128, 128))
    with caplog.at_level("WARNING", logger="deco.explain.render"):
        flat = np.asarray(render_t2i(image, torch.zeros(4, 4), "gradcam"))
    assert "flat map: every value is 0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="deco.explain.render"):
        peaked = np.asarray(render_t2i(image, torch.eye(4), "gradcam"))
    assert caplog.text == ""
    crimson = (flat[..., 0] > 180) & (flat[..., 1] < 60) & (flat[..., 2] < 90)  # the note's box
    assert crimson.sum() > 200 and not ((peaked[..., 0] > 180) & (peaked[..., 1] < 60) & (peaked[..., 2] < 90)).any()


def test_unique_tags_per_checkpoint():
    from deco.explain.export import ckpt_label, unique_tag

    assert ckpt_label("runs/finetune/avgpool-q16-s2/checkpoints/last.ckpt") == "avgpool-q16-s2"
    assert ckpt_label("outputs/train/x/checkpoints/step-10.ckpt") == "x-step-10"
    assert ckpt_label("exported/seed1/") == "seed1"
    used: set[str] = set()
    a = "a/s1/checkpoints/last.ckpt"
    tags = [unique_tag("avgpool2_16", c, used) for c in (a, "a/s2/checkpoints/last.ckpt", a, "x.ckpt")]
    assert tags == ["avgpool2_16", "avgpool2_16-s2", "avgpool2_16-s1", "avgpool2_16-x"]
    assert unique_tag("avgpool2_16", a, used) == "avgpool2_16-s1-2"
    assert unique_tag("qformer2_16", a, used) == "qformer2_16"


def test_comparison_figure_one_row_per_projector(avgpool_relevance):
    from deco.explain.compare import Row, render_comparison
    from deco.explain.export import tensor_dict

    inp, rel = avgpool_relevance
    row = Row.from_tensors("avgpool2_16", tensor_dict(rel, inp.text, "a"), inp.image)
    one = render_comparison([row], inp.text, "What is it?")
    three = render_comparison([row, row, row], inp.text, "What is it?")
    assert abs(three.size[0] - one.size[0]) < 0.05 * one.size[0] and three.size[1] > 2 * one.size[1]  # rows stack
    with pytest.raises(ValueError, match="at least one row"):
        render_comparison([], "x")


def test_comparison_of_a_multirun_from_its_job_dirs(avgpool_relevance, tmp_path):
    """`deco.explain -m ckpt=a,b ...`: the sweep's callback draws one comparison from the job dirs' files."""
    import json

    from deco.explain.compare import compare_job_dirs, square_view

    inp, rel = avgpool_relevance
    image = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(image)
    jobs = []
    for k, tag in enumerate(["avgpool2_16", "qformer2_16"]):
        job = tmp_path / "sweep" / str(k)
        files = export_relevance(rel, inp, job, tag, images=False)
        (job / "index.jsonl").write_text(json.dumps({"method": "rgae", "text": inp.text, "projector": tag, "tag": tag,
                                                     "files": {"tensors": files["tensors"].name}}) + "\n")
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text(f"image: {image}\nquestion: What is it?\ndata: null\n")
        jobs.append(job)
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    written = compare_job_dirs([*jobs, tmp_path / "sweep" / "multirun.yaml"], tmp_path / "sweep")
    assert written == [tmp_path / "sweep" / "comparison-rgae-A-pot-of-green-plants.png"]
    assert compare_job_dirs(jobs[:1], tmp_path / "one") == []  # one checkpoint: nothing to compare
    # pad: the 200 x 100 red image sits in the middle of a square of the mean colour
    view = np.asarray(square_view(Image.open(image), "pad", size=100))
    assert tuple(view[50, 50]) == (200, 30, 30) and tuple(view[5, 50]) == (122, 116, 104)


def test_sweep_rows_of_one_projector_keep_their_checkpoints_apart():
    from deco.explain.compare import distinct_labels

    labels = distinct_labels(["avgpool2_64", "avgpool2_64", "qformer2_64"],
                             ["runs/a4/checkpoints/last.ckpt", "runs/a800/checkpoints/last.ckpt", "q.ckpt"])
    assert labels == ["avgpool2_64-a4", "avgpool2_64-a800", "qformer2_64"]
    assert distinct_labels(["x", "x"], ["same.ckpt", "same.ckpt"]) == ["x-same-1", "x-same-2"]


def test_learned_queries_get_a_ranked_strip_never_a_grid():
    from deco.explain.render import ranked_queries, t2q_figure

    r_t2q = torch.tensor([0.1, 0.4, 0.0, 0.4] + [0.05] * 12)  # 16 queries: a square count
    assert ranked_queries(r_t2q, 3) == [1, 3, 0]  # ties: lower index first
    titles = lambda fig: [ax.get_title() for ax in fig.axes]  # noqa: E731
    grid = titles(t2q_figure(r_t2q, spatial=True))
    strip_fig = t2q_figure(r_t2q, spatial=False)
    assert "4x4 query grid" in grid
    assert not any("grid" in t for t in titles(strip_fig))
    strip = next(ax for ax in strip_fig.axes if ax.get_title().startswith("ranked queries"))
    assert [t.get_text() for t in strip.get_yticklabels()][:3] == ["q1", "q3", "q0"]


def test_images_of_one_wandb_key_share_a_size():
    from PIL import Image

    from deco.lit.relevance_callback import one_size

    small, wide = Image.new("RGB", (40, 30), (0, 0, 0)), Image.new("RGB", (60, 20), (0, 0, 0))
    padded = one_size([small, wide])
    assert [p.size for p in padded] == [(60, 30), (60, 30)]
    assert padded[0].getpixel((10, 10)) == (0, 0, 0) and padded[0].getpixel((50, 25)) == (255, 255, 255)
