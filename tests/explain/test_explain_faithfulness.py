"""Faithfulness protocols: distractor probes, the causal (mean-ablation) test, insertion AUC, paired contrasts."""

from __future__ import annotations

import math

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import SIZES
from deco.explain.causal import ablation_sets, answer_scores, causal_test, image_tokens, visual_token_means
from deco.explain.distractors import FAMILIES, distractor_probes, distractor_scene
from deco.explain.score import patch_keep_masks, perturbation_curve, score_model, target_log_probs
from deco.explain.summary import paired_difference, summarize


def test_distractor_scenes_share_exactly_one_attribute_and_regenerate():
    seen = set()
    for index in range(64):
        scene, asked, other, family, question, answer = distractor_scene(1000, index)
        assert family == FAMILIES[index % 4]
        same_colour, same_shape = asked.colour == other.colour, asked.shape == other.shape
        assert same_colour != same_shape, index  # exactly one shared attribute
        assert list(SIZES).index(other.size) >= list(SIZES).index(asked.size)  # the distractor is no smaller
        assert sum(o.colour == asked.colour and o.shape == asked.shape for o in scene.objects) == 1  # unique referent
        if family == "colour":
            assert same_colour and question == f"What colour is the {asked.shape}?" and answer == asked.colour.capitalize() + "."
            assert sum(o.shape == asked.shape for o in scene.objects) == 1  # the question names one object
        if family == "shape":
            assert same_shape and answer == asked.shape.capitalize() + "."
            assert sum(o.colour == asked.colour for o in scene.objects) == 1
        seen.add((family, same_colour))
        again = distractor_scene(1000, index)
        assert again[0].image.tobytes() == scene.image.tobytes() and again[1] == asked
    assert {("colour", True), ("shape", False), ("existence", True), ("existence", False)} <= seen
    assert distractor_scene(1001, 0)[0].image.tobytes() != distractor_scene(1000, 0)[0].image.tobytes()


def test_distractor_probes_carry_both_boxes():
    _, tokenizer, processor = tiny_model("avgpool")
    probes = distractor_probes(tokenizer, processor, seed=1000, num_samples=4)
    for probe in probes:
        _, asked, other, *_ = distractor_scene(1000, probe.index)
        assert probe.box == tuple(v / 336 for v in asked.box) and probe.distractor == tuple(v / 336 for v in other.box)
        assert probe.probe_set == "distractors" and probe.task == FAMILIES[probe.index % 4]
    plain = distractor_probes(tokenizer, processor, seed=1000, num_samples=1, template="plain")[0]
    _, first, *_ = distractor_scene(1000, 0)
    assert plain.task == "caption" and plain.inp.text == f"A {first.size} {first.colour} {first.shape}."


def test_ablation_sets_by_hand():
    top, rand = ablation_sets(torch.tensor([0.1, 0.5, 0.5, 0.0, 0.3]), 2, seed=3)
    assert top.tolist() == [1, 2]  # ties: lower index first
    assert rand.tolist() == torch.randperm(5, generator=torch.Generator().manual_seed(3))[:2].tolist()
    with pytest.raises(ValueError, match="k=6 visual tokens"):
        ablation_sets(torch.zeros(5), 6, 0)


@pytest.fixture(scope="module")
def avgpool_probes():
    model, tokenizer, processor = tiny_model("avgpool")
    return model, tokenizer, distractor_probes(tokenizer, processor, seed=1000, num_samples=2)


def test_causal_test_equals_a_direct_mean_ablation(avgpool_probes):
    model, tokenizer, probes = avgpool_probes
    inp = probes[0].inp
    means = visual_token_means(model, [p.inp for p in probes])
    torch.testing.assert_close(means, (image_tokens(model, probes[0].inp) + image_tokens(model, probes[1].inp))[0] / 2)
    r_t2q = torch.arange(16.0)  # tokens 15 and 14 on top
    out = causal_test(model, inp, r_t2q, means, fraction=2 / 16, seed=5)
    tokens = image_tokens(model, inp)
    ablated = tokens.clone()
    ablated[0, [15, 14]] = means[[15, 14]]
    with torch.no_grad():
        labels = torch.where(inp.target_mask, inp.input_ids, -100)[None]
        logits = [model(inp.input_ids[None], image_tokens=t, labels=labels).logits for t in (tokens, ablated)]
    mask = inp.target_mask.nonzero().flatten() + 15  # 16 visual tokens replace one placeholder
    lp = [torch.log_softmax(lg[0, mask - 1], -1).gather(1, inp.input_ids[inp.target_mask][:, None]).mean() for lg in logits]
    assert out["causal_drop_top"] == pytest.approx(float(lp[0] - lp[1]), abs=1e-5)
    flip = float((logits[0][0, mask - 1].argmax(-1) != logits[1][0, mask - 1].argmax(-1)).any())
    assert out["causal_flip_top"] == flip
    # ablating every token: top and random are the same set
    full = causal_test(model, inp, r_t2q, means, fraction=1.0, seed=5)
    assert full["causal_drop_top"] == pytest.approx(full["causal_drop_random"], abs=1e-6)
    assert answer_scores(model, inp, tokens)[0].shape == (1,)


def test_insertion_is_deletion_reversed(avgpool_probes):
    model, _, probes = avgpool_probes
    inp = probes[0].inp
    rel = torch.rand(24, 24, generator=torch.Generator().manual_seed(0))
    steps = (0.0, 0.5, 1.0)
    inserted = perturbation_curve(model, inp, rel, True, steps, insertion=True)
    removed = perturbation_curve(model, inp, rel, True, steps)
    assert inserted[0] == pytest.approx(removed[-1], abs=1e-5) and inserted[-1] == pytest.approx(removed[0], abs=1e-5)
    # half inserted = the most relevant half kept, i.e. the complement of the half removed first
    keep = ~patch_keep_masks(rel, (0.5,), True)[0]
    pixels = inp.pixel_values * torch.nn.functional.interpolate(keep[None, None].float(), size=336)[0]
    assert inserted[1] == pytest.approx(float(target_log_probs(model, inp, pixels[None])[0]), abs=1e-5)


def test_score_model_reports_distractor_and_causal_columns(avgpool_probes):
    model, tokenizer, probes = avgpool_probes
    rows = score_model(model, tokenizer, probes, ["rgae"], "avgpool2_16", perturbation=False, causal=0.25,
                       checkpoint="tiny")
    rgae = [r for r in rows if r["method"] == "rgae"]
    assert len(rgae) == 2 and all(r["probes"] == "distractors" and r["checkpoint"] == "tiny" for r in rows)
    for row in rgae:
        assert row["top_query_margin"] == pytest.approx(row["top_query_energy"] - row["top_query_distractor"])
        assert 0 <= row["distractor_energy"] <= 1 and row["causal_flip_top"] in (0.0, 1.0)
        assert {"causal_drop_top", "causal_drop_random", "causal_flip_random"} <= set(row)
    random_rows = [r for r in rows if r["method"] == "random"]
    assert random_rows and not any("causal_drop_top" in r for r in random_rows)  # a noise map has no R_t2q


def test_paired_difference_by_hand():
    rows = [{"probes": "distractors", "projector": p, "method": "rgae", "index": i, "top_query_margin": v}
            for p, vals in (("avg", (0.5, 0.4, 0.9)), ("qf", (0.1, 0.3, 0.2))) for i, v in enumerate(vals)]
    rows.append({"probes": "distractors", "projector": "qf", "method": "rgae", "index": 7, "top_query_margin": 9.0})
    mean, ci, n = paired_difference(rows, "top_query_margin", "avg", "qf")
    diffs = torch.tensor([0.4, 0.1, 0.7], dtype=torch.float64)  # index 7 has no partner: left out
    assert n == 3 and mean == pytest.approx(0.4)
    assert ci == pytest.approx(4.302653 * float(diffs.std()) / math.sqrt(3), rel=1e-5)
    with pytest.raises(ValueError, match="no distractors probe"):
        paired_difference(rows, "energy", "avg", "qf")
    by_set = {s["probes"] for s in summarize(rows + [{"projector": "avg", "method": "rgae", "energy": 1.0}])}
    assert by_set == {"distractors", "shapes"}
