"""Scores of relevance maps: box fractions, energy in box, pointing game, perturbation test, tables."""

from __future__ import annotations

import math

import pytest
import torch
from explain_helpers import tiny_model

from deco.explain.score import (
    auc,
    box_patch_fraction,
    comparison_table,
    energy_in_box,
    patch_keep_masks,
    perturbation_curve,
    pointing_hit,
    score_map,
    shapes_probes,
    summarize,
    target_log_probs,
)


def test_box_patch_fraction_by_hand():
    frac = box_patch_fraction((0.0, 0.0, 1.5 / 24, 1 / 24), 24)
    assert frac[0, 0] == 1.0 and frac[0, 1] == 0.5 and float(frac.sum()) == 1.5
    frac = box_patch_fraction((0.25, 0.5, 0.75, 1.0), 4)  # columns 1-2, rows 2-3
    expected = torch.zeros(4, 4)
    expected[2:, 1:3] = 1.0
    assert torch.equal(frac, expected)
    with pytest.raises(ValueError, match="normalised"):
        box_patch_fraction((10, 10, 50, 50), 24)


def test_concentrated_map_scores_higher_than_uniform():
    box = (0.25, 0.5, 0.75, 1.0)  # a quarter of the image
    inside = torch.full((24, 24), 0.1)
    inside[12:24, 6:18] = 1.0
    uniform = torch.ones(24, 24)
    assert energy_in_box(inside, box) == pytest.approx(1.0)  # min-max puts the outside at 0
    assert energy_in_box(uniform, box) == pytest.approx(0.25)  # flat map: the box's area share
    assert pointing_hit(inside, box) == 1.0
    outside = torch.zeros(24, 24)
    outside[0, 0] = 1.0
    assert pointing_hit(outside, box) == 0.0 and energy_in_box(outside, box) == 0.0
    assert pointing_hit(uniform, box) == pytest.approx(0.25)  # a flat map points nowhere: chance level
    noisy = torch.rand(24, 24, generator=torch.Generator().manual_seed(0))
    assert energy_in_box(noisy + 5 * inside, box) > energy_in_box(noisy, box)


def test_patch_keep_masks_and_auc():
    rel = torch.arange(16.0).reshape(4, 4)  # patch 15 most relevant
    keep = patch_keep_masks(rel, (0.0, 0.25, 1.0), positive=True)
    assert keep[0].all() and not keep[2].any()
    assert keep[1].flatten().tolist() == [True] * 12 + [False] * 4  # the 4 most relevant removed
    keep = patch_keep_masks(rel, (0.25,), positive=False)
    assert keep[0].flatten().tolist() == [False] * 4 + [True] * 12  # the 4 least relevant removed
    assert auc((0.0, 0.5, 1.0), (1.0, 1.0, 0.0)) == pytest.approx(0.75)


def test_shapes_probes_name_their_object():
    _, tokenizer, processor = tiny_model("avgpool")
    probes = shapes_probes(tokenizer, processor, seed=1000, num_samples=4)
    assert [p.task for p in probes] == ["attribute", "grounding", "attribute", "grounding"]
    grounding = probes[1]
    # the target text is the box itself, 2 decimals of the object's pixel box / 336
    assert grounding.inp.text == "[" + ", ".join(f"{v:.2f}" for v in grounding.box) + "]"
    attribute = probes[0]
    assert attribute.inp.question.startswith("What") and attribute.phrase.split()[1] in attribute.inp.question + attribute.inp.text.lower()
    plain = shapes_probes(tokenizer, processor, seed=1000, num_samples=1, template="plain")[0]
    assert plain.inp.text.endswith(plain.phrase + ".") and plain.task == "caption"


def test_perturbation_curve_endpoints_match_direct_log_probs():
    model, tokenizer, processor = tiny_model("avgpool")
    probe = shapes_probes(tokenizer, processor, seed=1000, num_samples=1)[0]
    rel = torch.rand(24, 24, generator=torch.Generator().manual_seed(1))
    curve = perturbation_curve(model, probe.inp, rel, positive=True, steps=(0.0, 1.0))
    direct = target_log_probs(model, probe.inp, torch.stack([probe.inp.pixel_values, torch.zeros_like(probe.inp.pixel_values)]))
    torch.testing.assert_close(torch.tensor(curve), direct, atol=1e-5, rtol=1e-5)
    row = score_map(model, probe, rel, perturbation=True, steps=(0.0, 1.0))
    assert row["auc_positive"] == pytest.approx(sum(curve) / 2, abs=1e-5)  # trapezoid over [0, 1]
    assert 0.0 <= row["energy"] <= 1.0 and row["pointing"] in (0.0, 1.0)


def test_summary_and_table():
    rows = [
        {"projector": "avgpool2_16", "method": "rgae", "energy": 0.5, "box_area": 0.1, "pointing": 1.0},
        {"projector": "avgpool2_16", "method": "rgae", "energy": 0.3, "box_area": 0.1, "pointing": 0.0},
        {"projector": "linear", "method": "rgae", "energy": 0.2, "box_area": 0.1, "pointing": 0.0},
    ]
    summary = {(s["projector"], s["method"]): s for s in summarize(rows)}
    assert summary[("avgpool2_16", "rgae")]["energy"] == pytest.approx(0.4)
    assert summary[("avgpool2_16", "rgae")]["n"] == 2 and summary[("linear", "rgae")]["pointing"] == 0.0
    # Student t, 1 degree of freedom: t = 12.706; sd of (0.5, 0.3) = 0.1414, sem = 0.1
    assert summary[("avgpool2_16", "rgae")]["energy_ci95"] == pytest.approx(12.7062 * 0.1, rel=1e-4)
    assert math.isnan(summary[("linear", "rgae")]["energy_ci95"])  # one value: no interval
    table = comparison_table(list(summary.values())).splitlines()
    assert table[0] == "| probes | projector | checkpoint | method | n | energy | box_area | pointing |"
    assert table[2].startswith("| shapes | avgpool2_16 |  | rgae | 2 | 0.400 ± 1.271 |")


def test_two_checkpoints_of_one_projector_stay_apart():
    rows = [{"projector": "avgpool2_16", "checkpoint": c, "method": "rgae", "energy": e}
            for c, e in (("run4", 0.1), ("run4", 0.3), ("run800", 0.7))]
    summary = {s["checkpoint"]: s for s in summarize(rows)}
    assert summary["run4"]["n"] == 2 and summary["run4"]["energy"] == pytest.approx(0.2)
    assert summary["run800"]["n"] == 1 and summary["run800"]["energy"] == pytest.approx(0.7)
    table = comparison_table(list(summary.values()))
    assert "| avgpool2_16 | run4 | rgae | 2 | 0.200" in table and "| avgpool2_16 | run800 | rgae | 1 | 0.700" in table
    assert comparison_table(summarize(rows), metrics=["energy"]).splitlines()[0].endswith("| n | energy |")


def test_top_query_energy_reads_the_tokens_the_text_relies_on():
    from deco.explain.score import top_query_energy

    # 2 x 2 patches; the box is the left column (patches 0 and 2). Rows of R_q2i look at one patch each.
    r_q2i = torch.eye(4)[[1, 0, 2, 3]]  # token 0 -> patch 1 (right), 1 -> 0 (left), 2 -> 2 (left), 3 -> 3
    r_t2q = torch.tensor([0.1, 0.9, 0.5, 0.0])
    box = (0.0, 0.0, 0.5, 1.0)
    assert top_query_energy(r_t2q, r_q2i, box, k=2) == pytest.approx(1.0)  # tokens 1 and 2: both on the box
    assert top_query_energy(r_t2q, r_q2i, box, k=3) == pytest.approx(2 / 3)  # + token 0, off the box
    assert top_query_energy(r_t2q, torch.ones(4, 4), box, k=1) == pytest.approx(0.5)  # a flat row: the area
