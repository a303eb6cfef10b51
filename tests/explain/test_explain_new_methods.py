"""relatt, tam and perturb against hand computations on the tiny models (deco.explain.recent_methods); attnlrp has
its own file (test_explain_attnlrp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import make_sample
from deco.explain.inputs import build_input, with_question
from deco.explain.methods import METHODS, explain, explain_all
from deco.explain.recent_methods import GENERIC_QUESTION, PERTURB_GROUP, patch_groups, rank_gaussian_filter
from deco.models.attention import attention


def _input(projector="avgpool"):
    model, tokenizer, processor = tiny_model(projector)
    scene, _, meta = make_sample(1000, 5, ("attribute",))
    return model, tokenizer, build_input(tokenizer, processor, scene.image, meta["answer"], question=meta["question"])


def _forward(model, inp, **kwargs):
    """Independent forward: (logits T V, attentions) with the image spliced by MLLM.forward, eager attention."""
    labels = torch.where(inp.target_mask, inp.input_ids, -100)[None]
    with torch.no_grad(), attention(model, "eager"):
        out = model(inp.input_ids[None], pixel_values=inp.pixel_values[None], labels=labels, **kwargs)
    return out


def _rows(model, inp):
    q = model.num_visual_tokens
    return [p + q - 2 for p in inp.target_mask.nonzero().flatten().tolist()]  # predicting positions


def test_the_four_methods_are_registered_everywhere():
    assert {"relatt", "tam", "perturb", "attnlrp"} <= set(METHODS)  # explain, mode=score, callback and app read METHODS


def test_relatt_is_the_ratio_of_layer_mean_attention_to_a_generic_prompt():
    model, tokenizer, inp = _input()
    rel = explain(model, inp, "relatt", tokenizer)
    generic = with_question(inp, tokenizer, GENERIC_QUESTION)
    assert generic.text == inp.text and generic.question == GENERIC_QUESTION
    at = inp.input_ids.tolist().index(model.image_token_id)
    means = []
    for x in (inp, generic):
        attn = torch.stack([a[0].mean(0) for a in _forward(model, x, output_attentions=True).attentions]).mean(0)
        means.append(attn[_rows(model, x)][:, at : at + 16])
    torch.testing.assert_close(rel.r_t2q_tokens, means[0] / means[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        explain(model, inp, "relatt")


def _rank_filter_by_hand(img: np.ndarray) -> np.ndarray:
    """TAM's rule, cell by cell: reflected 3 x 3 window, sorted, Gaussian weights over rank, sigma = cov."""
    padded = np.pad(img, 1, mode="reflect")
    out = np.zeros_like(img)
    ax = np.arange(9) - 4
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            window = np.sort(padded[i : i + 3, j : j + 3].flatten())
            if window.mean() > 0:
                sigma = window.std() / window.mean()
                kernel = np.exp(-(ax**2) / (2 * sigma**2))
                out[i, j] = (window * kernel / kernel.sum()).sum()
    return out


def test_rank_gaussian_filter_matches_the_rule_cell_by_cell():
    img = np.random.default_rng(0).random((4, 5)) - 0.2  # some windows have a mean <= 0 at the corners
    img[0, 0] = img[0, 1] = img[1, 0] = img[1, 1] = -1.0
    out = rank_gaussian_filter(torch.tensor(img)).numpy()
    np.testing.assert_allclose(out, _rank_filter_by_hand(img), rtol=1e-10, atol=1e-12)
    assert out[0, 0] == 0.0  # a window with a negative mean
    flat = rank_gaussian_filter(torch.full((3, 3), 2.0))
    assert torch.equal(flat, torch.full((3, 3), 2.0))  # a flat window keeps its value


def test_tam_by_hand_from_the_logits():
    model, tokenizer, inp = _input()
    rel = explain(model, inp, "tam", tokenizer)
    logits = _forward(model, inp).logits[0].float()
    q, at = 16, inp.input_ids.tolist().index(model.image_token_id)
    merged = inp.input_ids.tolist()[:at] + [-1] * q + inp.input_ids.tolist()[at + 1 :]
    for k, row in enumerate(_rows(model, inp)):
        cls = merged[row + 1]
        own = np.maximum(logits[at : at + q, cls].numpy(), 0)
        earlier = [p for p in range(at + q, row + 1) if merged[p] != cls]
        w = np.maximum(logits[earlier, cls].numpy(), 0)
        w = w / (w.sum() + 1e-8)
        interference = sum(w[i] * np.maximum(logits[at : at + q, merged[p]].numpy(), 0) for i, p in enumerate(earlier))
        scale = float(own @ interference / (interference @ interference))  # the least-squares scalar
        cam = np.maximum(own - scale * interference, 0)
        expected = _rank_filter_by_hand(cam.reshape(4, 4).astype(np.float64)).flatten()
        np.testing.assert_allclose(rel.r_t2q_tokens[k].numpy(), expected, rtol=1e-4, atol=1e-5)
    # learned queries have no grid: no filter
    qmodel, qtok, qinp = _input("qformer")
    assert explain(qmodel, qinp, "tam", qtok).r_t2q_tokens.shape == (2, 16)


def test_patch_groups_by_hand():
    groups = patch_groups(8, 4, 2)[0, 0]  # 8 px, 4 x 4 patches of 2 px, groups of 2 x 2 patches
    assert groups[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and groups[:, 0].tolist() == [0, 0, 0, 0, 2, 2, 2, 2]
    assert int(groups.max()) == 3
    assert int(patch_groups(336, 24, PERTURB_GROUP).max()) == 35  # 6 x 6 groups


def test_perturb_is_the_log_prob_drop_of_each_patch_group():
    model, tokenizer, inp = _input()
    rel = explain(model, inp, "perturb", tokenizer)
    groups = patch_groups(336, 24, PERTURB_GROUP)[0, 0]
    target = inp.input_ids[inp.target_mask]

    def log_prob(pixels):
        out = model(inp.input_ids[None], pixel_values=pixels[None])
        logp = torch.log_softmax(out.logits[0, _rows(model, inp)].float(), -1)
        return float(logp.gather(1, target[:, None]).sum())

    with torch.no_grad():
        base = log_prob(inp.pixel_values)
        for g in (0, 14, 35):
            ablated = inp.pixel_values * (groups != g)
            r, c = divmod(g, 6)
            assert float(rel.r_t2i[4 * r, 4 * c]) == pytest.approx(base - log_prob(ablated), abs=1e-4)
            assert torch.equal(
                rel.r_t2i[4 * r : 4 * r + 4, 4 * c : 4 * c + 4], rel.r_t2i[4 * r, 4 * c].expand(4, 4)
            )  # one value per group
    # R_t2q: each pooled token's mean positive drop over its 6 x 6 patches
    expected = rel.r_t2i.clamp(min=0).reshape(4, 6, 4, 6).mean((1, 3)).flatten()
    torch.testing.assert_close(rel.r_t2q, expected)


def test_recent_methods_share_one_forward_with_the_others():
    model, tokenizer, inp = _input("qformer")
    results = explain_all(model, inp, ["rgae", "tam", "relatt"], tokenizer)
    assert all(r.r_t2i.shape == (24, 24) and not r.spatial_queries for r in results.values())


def test_integrated_gradients_by_hand_and_its_default_steps():
    from captum.attr import IntegratedGradients

    from deco.explain.methods import Relevance

    model, tokenizer, inp = _input()
    rows, target = _rows(model, inp), inp.input_ids[inp.target_mask]

    def score(tokens):  # B q d -> B: the summed target logits, each at its predicting row
        logits = model(inp.input_ids[None].expand(tokens.shape[0], -1), image_tokens=tokens).logits
        return logits[:, rows, target].float().sum(-1)

    tokens = model.encode_images(inp.pixel_values[None]).detach()
    attr = IntegratedGradients(score).attribute(
        tokens, baselines=torch.zeros_like(tokens), n_steps=16, internal_batch_size=16
    )
    rel = explain(model, inp, "ig", tokenizer)  # ig_steps defaults to 16
    torch.testing.assert_close(rel.r_t2q, attr.sum(-1).abs()[0], rtol=1e-4, atol=1e-6)
    assert Relevance("x", rel.r_t2q, rel.r_q2i, rel.r_t2q_tokens, [], 0.0, 0.0).spatial_queries  # default: a grid
