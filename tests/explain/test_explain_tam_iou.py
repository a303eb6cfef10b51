"""TAM's Obj-IoU / Func-IoU (xmed-lab/TAM eval.py's rule) by hand, and the caption probes that feed them."""

from __future__ import annotations

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import CAPTION_Q, _caption, render_scene
from deco.explain.captions import caption_probes, shape_masks
from deco.explain.methods import explain_all
from deco.explain.score import score_model
from deco.explain.summary import comparison_table, summarize
from deco.explain.tam_iou import (
    _resized,
    caption_ious,
    caption_scores,
    otsu_threshold,
    to_uint8,
    word_groups,
    word_type,
)


def test_otsu_picks_the_first_threshold_of_the_largest_between_class_variance():
    # {0,0,10,10,200,200}: t in [0,10): 1/3 * 2/3 * 105^2 = 2450; t in [10,200): 2/3 * 1/3 * 195^2 = 8450 -> t = 10
    assert otsu_threshold(torch.tensor([0, 0, 10, 10, 200, 200], dtype=torch.uint8)) == 10
    # two levels: every t in [0, 255) splits them the same way; the first one wins
    assert otsu_threshold(torch.tensor([0, 255, 0, 255], dtype=torch.uint8)) == 0
    assert otsu_threshold(torch.full((3, 3), 7, dtype=torch.uint8)) == 0  # nothing to split
    # 8 x 0, 4 x 51, 4 x 255: t in [0,51): .25 * 153^2 = 5852.25; t in [51,255): .75 * .25 * 238^2 = 10620.75
    assert otsu_threshold(torch.tensor([0] * 8 + [51] * 4 + [255] * 4, dtype=torch.uint8)) == 51
    assert otsu_threshold(torch.tensor([1, 2], dtype=torch.uint8)) == 1  # a small between-class variance (0.25)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # against a direct transcription: class weights and means of {v <= t} and {v > t}
        values = torch.randint(0, 256, (int(torch.randint(2, 40, (1,), generator=gen)),), generator=gen).to(torch.uint8)
        v = values.double()
        best, expected = 0.0, 0
        for t in range(256):
            low, high = v[v <= t], v[v > t]
            if len(low) and len(high):
                sigma = len(low) / len(v) * len(high) / len(v) * float(low.mean() - high.mean()) ** 2
                if sigma > best + 1e-9:
                    best, expected = sigma, t
        assert otsu_threshold(values) == expected


def test_words_types_and_uint8_maps():
    pieces = ["A", "Ġsmall", "Ġred", "Ġcircle", ",", "Ġa", "Ġblue", "Ġsq", "uare", "."]
    decoded = ["A", " small", " red", " circle", ",", " a", " blue", " sq", "uare", "."]
    words, groups = word_groups(pieces, decoded)
    assert words == ["A", "small", "red", "circle", ",", "a", "blue", "square", "."]
    assert groups == [[0], [1], [2], [3], [4], [5], [6], [7, 8], [9]]
    assert word_groups(["▁the", "▁cat"], ["the", "cat"])[0] == ["the", "cat"]  # sentencepiece marks, no spaces
    nouns = ["circle", "square", "triangle"]
    assert [word_type(w, nouns) for w in ["A", "and", "squares", "Circle", "orange", "."]] == [
        "function",
        "function",
        "noun",
        "noun",
        "other",
        "other",
    ]
    assert word_type("glass", nouns) == "other"  # ends in "s", but "glas" is no shape
    assert to_uint8(torch.tensor([[0.0, 1.0], [2.0, 4.0]])).tolist() == [[0, 63], [127, 255]]  # 63.75, 127.5 truncated
    assert to_uint8(torch.ones(2, 2)).tolist() == [[0, 0], [0, 0]]
    assert to_uint8(torch.tensor([[1.0, 2.0], [3.0, 5.0]])).tolist() == [[0, 63], [127, 255]]  # min 1, span 4
    assert to_uint8(torch.tensor([[0.0, 0.25], [0.125, 0.5]])).tolist() == [[0, 127], [63, 255]]  # span 0.5
    # bilinear with half-pixel centres (cv2.resize): output x = 0.25 in source units between the two columns
    up = _resized(torch.tensor([[255, 0], [0, 0]], dtype=torch.uint8), (4, 4))
    assert up[0].tolist() == [255, 191, 64, 0] and up[1, 1] == 143  # 255 * .75 = 191.25; 255 * .75 * .75 = 143.4


def _caption_case():
    """ "A red square and a circle." on 4 x 4 maps (no resize), the masks and the maps, by hand."""
    pieces = ["A", "Ġred", "Ġsquare", "Ġand", "Ġa", "Ġcircle", "."]
    decoded = [p.replace("Ġ", " ") for p in pieces]
    masks = {
        "square": torch.zeros(4, 4, dtype=torch.bool),
        "circle": torch.zeros(4, 4, dtype=torch.bool),
        "triangle": torch.zeros(4, 4, dtype=torch.bool),
    }
    masks["square"][:2, :2] = True
    masks["circle"][2:, 2:] = True
    maps = torch.zeros(7, 4, 4)
    maps[0, 3, 0] = 1.0  # "A": one bright cell
    maps[2, :2, :2], maps[2, 2, :] = 10.0, 2.0  # "square": uint8 255 x 4, 51 x 4, 0 x 8 -> Otsu 51 -> IoU 1
    maps[3] = torch.arange(16.0).reshape(4, 4)  # "and": a ramp, uint8 17 i
    maps[5, 2:, 2:], maps[5, 0, 3] = 10.0, 10.0  # "circle": 5 cells at 255 -> Otsu 0 -> IoU 4 / 5
    maps[6] = torch.rand(4, 4)  # "." (another word: never scored)
    return maps, pieces, decoded, masks


def test_obj_and_func_iou_of_a_caption_by_hand():
    maps, pieces, decoded, masks = _caption_case()
    obj, func = caption_ious(maps, pieces, decoded, masks)
    assert obj == pytest.approx([1.0, 0.8])
    # fg = mean noun threshold = (51 + 0) / 2 = 25.5; share of each function word's uint8 map below it:
    # "A": 15 of 16 cells are 0; "and": 0 and 17 of 0..255 step 17; "a": a flat map is all 0
    assert func == pytest.approx([15 / 16, 2 / 16, 1.0])


def test_consecutive_nouns_of_one_category_merge_and_absent_categories_give_no_iou():
    masks = {"square": torch.zeros(4, 4, dtype=torch.bool), "circle": torch.zeros(4, 4, dtype=torch.bool)}
    masks["square"][:2, :2] = True
    maps = torch.zeros(3, 4, 4)
    maps[0, :2, :] = 1.0  # 8 cells: IoU 4 / 8
    maps[1, :2, :2] = 1.0  # IoU 1
    maps[2, 3, 3] = 1.0  # "circle": empty mask, threshold only
    obj, func = caption_ious(maps, ["Ġsquare", "Ġsquares", "Ġcircle"], [" square", " squares", " circle"], masks)
    assert obj == [1.0] and func == []
    with pytest.raises(ValueError, match="3 maps for 2 caption tokens"):
        caption_ious(maps, ["Ġsquare", "Ġsquares"], [" square", " squares"], masks)


def test_caption_probes_carry_the_exact_object_masks():
    _, tokenizer, processor = tiny_model("avgpool")
    probes = caption_probes(tokenizer, processor, seed=1000, num_samples=4)
    for probe in probes:
        scene = render_scene(1000, probe.index)
        assert probe.inp.text == _caption(scene.objects) and probe.inp.question == CAPTION_Q
        assert probe.probe_set == "captions" and set(probe.masks) == {"circle", "square", "triangle"}
        xs = [v for o in scene.objects for v in (o.box[0], o.box[2])]
        ys = [v for o in scene.objects for v in (o.box[1], o.box[3])]
        assert probe.box == (min(xs) / 336, min(ys) / 336, max(xs) / 336, max(ys) / 336)
        for obj in scene.objects:
            if obj.shape == "square":  # a filled square: exactly its box's pixels
                x1, y1, x2, y2 = obj.box
                assert bool(probe.masks["square"][y1:y2, x1:x2].all()) and not bool(probe.masks["square"][y1 - 1, x1])
        present = {o.shape for o in scene.objects}
        assert all(bool(m.any()) == (shape in present) for shape, m in probe.masks.items())
    assert shape_masks([], 8)["circle"].shape == (8, 8)


def test_score_rows_and_tables_carry_obj_and_func_iou():
    model, tokenizer, processor = tiny_model("avgpool")
    probe = caption_probes(tokenizer, processor, seed=1000, num_samples=1)[0]
    rows = score_model(model, tokenizer, [probe], ["rawattn", "perturb"], "avgpool2_16", perturbation=False)
    by_method = {r["method"]: r for r in rows}
    rel = explain_all(model, probe.inp, ["rawattn"], tokenizer)["rawattn"]
    expected = caption_scores(rel.r_t2i_tokens, probe.inp, tokenizer, probe.masks)
    assert set(expected) == {"obj_iou", "func_iou"}  # "A ..." always has a function word and a shape noun
    assert by_method["rawattn"]["obj_iou"] == pytest.approx(expected["obj_iou"])
    assert by_method["rawattn"]["func_iou"] == pytest.approx(expected["func_iou"])
    assert "obj_iou" not in by_method["perturb"]  # one measured map, no per-token maps
    # F1-IoU: the harmonic mean of the two means, 2 * .5 * .25 / .75 = 1 / 3
    summary = summarize(
        [{"projector": "p", "method": "m", "obj_iou": o, "func_iou": f} for o, f in ((0.25, 0.5), (0.75, 0.0))]
    )
    assert summary[0]["f1_iou"] == pytest.approx(1 / 3)
    swapped = summarize([{"projector": "p", "method": "m", "obj_iou": 0.2, "func_iou": 0.6}])
    assert swapped[0]["f1_iou"] == pytest.approx(0.3)  # 2 * .2 * .6 / .8
    assert "f1_iou" not in summarize([{"projector": "p", "method": "m", "obj_iou": 0.5}])[0]
    assert summarize([{"projector": "p", "method": "m", "obj_iou": 0.0, "func_iou": 0.0}])[0]["f1_iou"] == 0.0
    assert "| obj_iou | func_iou | f1_iou |" in comparison_table(summary)


class _Pieces:
    """A stand-in tokenizer: token id i is pieces[i]."""

    def __init__(self, pieces):
        self.pieces = pieces

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]

    def decode(self, ids):
        return self.pieces[ids[0]].replace("Ġ", " ")


def test_caption_scores_are_the_captions_means_and_a_function_word_averages_its_tokens():
    from types import SimpleNamespace

    maps, pieces, _, masks = _caption_case()
    inp = SimpleNamespace(input_ids=torch.arange(7), target_mask=torch.ones(7, dtype=torch.bool))
    scores = caption_scores(maps, inp, _Pieces(pieces), masks)
    assert scores["obj_iou"] == pytest.approx((1.0 + 0.8) / 2)
    assert scores["func_iou"] == pytest.approx((15 / 16 + 2 / 16 + 1.0) / 3)
    assert caption_scores(maps[:1], inp, _Pieces(pieces), masks) == {}  # one map for 7 tokens: no per-token maps
    # "an" in two pieces; fg = the square's Otsu threshold 51; "a": 8 cells at 0 below it (4 at exactly 51 are
    # not), "n": flat -> 1; the word: their mean
    square = torch.zeros(4, 4)
    square[:2, :2], square[2, :] = 10.0, 2.0
    two = torch.stack([square, square, torch.zeros(4, 4)])
    obj, func = caption_ious(two, ["Ġsquare", "Ġa", "n"], [" square", " a", "n"], masks)
    assert obj == [1.0] and func == pytest.approx([(8 / 16 + 1.0) / 2])
