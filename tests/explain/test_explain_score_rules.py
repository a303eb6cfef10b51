"""The scoring rules case by case (deco.explain.score / summary): box checks, grids, energy, pointing, removal order,
the perturbation rows, the probes, the score rows and the tables."""

from __future__ import annotations

import math

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import make_sample, render_scene
from deco.explain.score import (
    STEPS,
    _as_grid,
    auc,
    box_patch_fraction,
    energy_in_box,
    patch_keep_masks,
    perturbation_curve,
    pointing_hit,
    random_map,
    score_map,
    score_model,
    shapes_probes,
    target_log_probs,
    top_query_energy,
)
from deco.explain.methods import explain
from deco.explain.summary import comparison_table, paired_difference, summarize

CHEFER_STEPS = (0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)  # LXMERT perturbation.py's fractions


@pytest.mark.parametrize("box", [(0.0, 0.0, 1.0, 1.0), (0.2, 0.3, 0.4, 0.9)])
def test_valid_boxes_pass(box):
    assert box_patch_fraction(box, 2).shape == (2, 2)


@pytest.mark.parametrize(
    "box",
    [
        (0.1, 0.1, 0.5),
        (0.1, 0.1, 0.5, 0.5, 0.9),
        (0.5, 0.0, 0.5, 1.0),
        (0.6, 0.0, 0.5, 1.0),
        (0.0, 0.5, 1.0, 0.5),
        (0.0, 0.0, 1.1, 1.0),
        (-0.1, 0.0, 1.0, 1.0),
        (0.0, -0.1, 1.0, 1.0),
        (0.0, 0.0, 1.0, 1.1),
    ],
)
def test_invalid_boxes_fail(box):
    with pytest.raises(ValueError, match="box"):
        box_patch_fraction(box, 4)


def test_box_fraction_of_a_box_off_the_patch_edges():
    # edges 0, .25, .5, .75, 1: x in [.1, .6] -> .6, 1, .4, 0 of each column; y in [.3, 1] -> 0, .8, 1, 1
    fx, fy = torch.tensor([0.6, 1.0, 0.4, 0.0]), torch.tensor([0.0, 0.8, 1.0, 1.0])
    torch.testing.assert_close(box_patch_fraction((0.1, 0.3, 0.6, 1.0), 4), fy[:, None] * fx[None, :])


def test_maps_must_be_square_grids():
    assert _as_grid(torch.arange(16.0)).shape == (4, 4)
    for bad in (torch.zeros(15), torch.zeros(3, 4), torch.zeros(2, 2, 2)):
        with pytest.raises(ValueError, match="grid|g x g"):
            _as_grid(bad)


def test_energy_and_pointing_by_hand():
    rel = torch.tensor([[0.0, 1.0], [2.0, 3.0]]) - 5  # min-max: [[0, 1/3], [2/3, 1]], sum 2
    left = (0.0, 0.0, 0.5, 1.0)
    assert energy_in_box(rel, left) == pytest.approx((2 / 3) / 2)
    assert energy_in_box(torch.full((2, 2), 7.0), left) == pytest.approx(0.5)  # flat: the area share
    assert pointing_hit(rel, left) == 0.0 and pointing_hit(rel, (0.5, 0.0, 1.0, 1.0)) == 1.0  # argmax: patch 3
    # a flat map: the share of patches the box touches (the box touches one column of two, not the other)
    assert pointing_hit(torch.ones(2, 2), left) == 0.5


def test_top_query_energy_reads_three_tokens_by_default():
    r_q2i = torch.eye(4)  # token i looks at patch i of a 2 x 2 grid
    left = (0.0, 0.0, 0.5, 1.0)  # patches 0 and 2
    r_t2q = torch.tensor([0.9, 0.8, 0.7, 0.0])  # tokens 0, 1, 2: two of three on the box
    assert top_query_energy(r_t2q, r_q2i, left) == pytest.approx(2 / 3)


def test_removal_order_and_rounding():
    rel = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    keep = patch_keep_masks(rel, (0.25, 0.5), positive=True)
    assert keep[0].flatten().tolist() == [False, True, True, True]  # round(0.25 * 4) = 1 patch, the most relevant
    assert keep[1].flatten().tolist() == [False, False, True, True]
    for bad in ((0.5, 1.5), (-0.25,)):
        with pytest.raises(ValueError, match="fractions in \\[0, 1\\]"):
            patch_keep_masks(rel, bad, positive=True)
    ties = patch_keep_masks(torch.ones(2, 2), (0.5,), positive=False)[0]
    assert ties.flatten().tolist() == [False, False, True, True]  # stable: ties removed in patch order
    assert patch_keep_masks(rel, STEPS, True).shape[0] == len(CHEFER_STEPS)
    removed = (~patch_keep_masks(torch.rand(24, 24), STEPS, True)).flatten(1).sum(1).tolist()
    assert removed == [round(s * 576) for s in CHEFER_STEPS]


@pytest.fixture(scope="module")
def probe():
    model, tokenizer, processor = tiny_model("avgpool")
    return model, tokenizer, shapes_probes(tokenizer, processor, seed=1000, num_samples=2)


def test_target_log_probs_for_a_batch(probe):
    model, _, probes = probe
    inp = probes[0].inp
    batch = torch.stack([inp.pixel_values, torch.zeros_like(inp.pixel_values)])
    out = target_log_probs(model, inp, batch)
    q = 16
    rows = [p + q - 2 for p in inp.target_mask.nonzero().flatten().tolist()]
    target = inp.input_ids[inp.target_mask]
    with torch.no_grad():
        for b in range(2):
            logits = model(inp.input_ids[None], pixel_values=batch[b : b + 1]).logits[0, rows]
            expected = torch.log_softmax(logits.float(), -1).gather(1, target[:, None]).mean()
            assert float(out[b]) == pytest.approx(float(expected), abs=1e-5)


def test_score_map_runs_each_curve_with_its_own_order(probe):
    model, _, probes = probe
    rel = torch.rand(24, 24, generator=torch.Generator().manual_seed(2))
    steps = (0.0, 0.5, 1.0)
    row = score_map(model, probes[0], rel, steps=steps)  # perturbation on by default
    inp = probes[0].inp
    assert row["auc_positive"] == pytest.approx(auc(steps, perturbation_curve(model, inp, rel, True, steps)))
    assert row["auc_negative"] == pytest.approx(auc(steps, perturbation_curve(model, inp, rel, False, steps)))
    assert row["auc_insertion"] == pytest.approx(auc(steps, perturbation_curve(model, inp, rel, True, steps, True)))
    assert row["auc_positive"] != pytest.approx(row["auc_negative"])
    assert "distractor_energy" not in row and row["box_area"] == pytest.approx(
        float(box_patch_fraction(probes[0].box, 24).mean())
    )


def test_random_map_is_the_seeded_noise_of_its_index():
    assert torch.equal(random_map(4, 3), torch.rand(4, 4, generator=torch.Generator().manual_seed(1237)))


def test_shapes_probes_pick_the_object_their_question_names():
    _, tokenizer, processor = tiny_model("avgpool")
    probes = shapes_probes(tokenizer, processor, seed=1000, num_samples=12, start=2)
    assert [p.index for p in probes] == list(range(2, 14))
    questions = {p.inp.question.split()[1] for p in probes if p.task == "attribute"}
    assert questions == {"colour", "shape"}  # both attribute questions: "What colour is ..." / "What shape is ..."
    for p in probes:
        scene, _, meta = make_sample(1000, p.index, ("attribute", "grounding"))
        obj = next(o for o in scene.objects if o.phrase == p.phrase)
        assert p.box == tuple(v / 336 for v in obj.box)
        if p.task == "attribute":
            answer = meta["answer"][:-1].lower()
            assert answer in (obj.colour, obj.shape) and (
                obj.shape in meta["question"] or obj.colour in meta["question"]
            )
        else:
            assert tuple(meta["box"]) == obj.box_norm
    plain = shapes_probes(tokenizer, processor, seed=1000, num_samples=3, template="plain")
    for p in plain:
        objects = render_scene(1000, p.index).objects
        assert p.phrase == objects[p.index % len(objects)].phrase


def test_score_model_rows_and_defaults(probe):
    model, tokenizer, probes = probe
    rows = score_model(model, tokenizer, probes[:1], ["rawattn"], "avgpool2_16", steps=(0.0, 1.0))
    assert {r["method"] for r in rows} == {"rawattn", "random"}
    assert all("auc_positive" in r and "causal_drop_top" not in r for r in rows)  # perturbation on, causal off
    assert "top_query_energy" in rows[0] and "top_query_energy" not in rows[1]  # the noise map has no tokens
    assert rows[0]["probes"] == "shapes" and rows[0]["checkpoint"] == ""
    no_methods = score_model(model, tokenizer, probes[:1], [], "x", perturbation=False)
    assert [r["method"] for r in no_methods] == ["random"] and no_methods[0]["box_area"] == pytest.approx(
        float(box_patch_fraction(probes[0].box, 24).mean())
    )
    assert no_methods[0]["energy"] == pytest.approx(energy_in_box(random_map(24, probes[0].index), probes[0].box))
    assert rows[1]["energy"] == pytest.approx(energy_in_box(random_map(24, probes[0].index), probes[0].box))
    assert rows[0]["log_prob"] == pytest.approx(explain(model, probes[0].inp, "rawattn", tokenizer).log_prob)
    assert math.isnan(no_methods[0]["log_prob"])
    # the causal test ablates with the means over `reference`, whatever probes are scored
    from deco.explain.causal import causal_test, visual_token_means

    rows = score_model(
        model, tokenizer, probes[:1], ["rawattn"], "a", perturbation=False, causal=0.25, reference=[probes[1].inp]
    )
    means = visual_token_means(model, [probes[1].inp])
    r_t2q = explain_rows(model, tokenizer, probes[0])
    direct = causal_test(model, probes[0].inp, r_t2q, means, 0.25, seed=probes[0].index)
    assert rows[0]["causal_drop_top"] == pytest.approx(direct["causal_drop_top"], abs=1e-6)
    assert rows[0]["causal_drop_random"] == pytest.approx(direct["causal_drop_random"], abs=1e-6)


def explain_rows(model, tokenizer, probe):
    from deco.explain.methods import explain

    return explain(model, probe.inp, "rawattn", tokenizer).r_t2q


def test_tables_by_hand():
    rows = [
        {"projector": "a", "method": "m", "energy": 0.2, "pointing": 1.0},
        {"projector": "a", "method": "m", "energy": 0.4},  # no pointing: left out of that mean
        {"projector": "b", "method": "m", "pointing": 0.0},
    ]
    summary = {s["projector"]: s for s in summarize(rows)}
    assert summary["a"]["pointing"] == 1.0 and summary["a"]["energy"] == pytest.approx(0.3)
    assert "energy" not in summary["b"]
    table = comparison_table(list(summary.values())).splitlines()
    assert table[0] == "| probes | projector | checkpoint | method | n | energy | pointing |"
    assert table[1] == "|" + "---|" * 7
    assert table[3].startswith("| shapes | b |  | m | 1 |  | 0.000 ± nan |")


def test_paired_difference_ignores_other_methods_sets_and_missing_values():
    base = {"probes": "distractors", "method": "rgae"}
    rows = [
        {**base, "projector": "a", "index": 0, "x": 1.0},
        {**base, "projector": "b", "index": 0, "x": 0.5},
        {**base, "projector": "a", "index": 1, "x": 3.0},
        {**base, "projector": "b", "index": 1, "x": 2.0},
        {**base, "projector": "a", "index": 2},
        {**base, "projector": "b", "index": 2, "x": 9.0},
        {"probes": "shapes", "method": "rgae", "projector": "a", "index": 5, "x": 9.0},
        {"probes": "shapes", "method": "rgae", "projector": "b", "index": 5, "x": 0.0},
        {"probes": "distractors", "method": "tam", "projector": "a", "index": 6, "x": 9.0},
        {"probes": "distractors", "method": "tam", "projector": "b", "index": 6, "x": 0.0},
        {**base, "projector": "c", "index": 0, "x": 100.0},
    ]
    mean, _, n = paired_difference(rows, "x", "a", "b")
    assert n == 2 and mean == pytest.approx(0.75)
    assert paired_difference(rows, "x", "a", "b", probes="shapes")[0] == pytest.approx(9.0)
