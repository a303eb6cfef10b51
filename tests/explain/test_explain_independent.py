"""Independent check of deco's R_t2q and R_q2i: Chefer's rule recomputed from scratch on HF modules, float64.

The reference below shares no code with deco.explain or deco.relevance: it splices the projector's tokens
into the text embeddings itself, runs the HF `LlamaForCausalLM` (eager attention, `output_attentions`) and
the HF `Blip2QFormerModel` (`output_attentions`: self and cross maps) in float64, keeps every attention
map's gradient with `retain_grad()`, and applies GAE (Chefer, Gur & Wolf, ICCV 2021, eqs. 5, 6, 8-10) as
written in the paper. The models are tiny defaults trained for a few steps in the test, so their attention
is no longer at its initial state; projector and LLM are cast to float64 after training, so deco and the
reference run the same weights and any difference is the rule's (deco keeps float32 where it multiplies
maps by gradients). deco's tensors must equal the reference to 1e-6 relative (measured: <= 2e-7), and the
same comparison must reject R_t2q read one visual-token column off (what a slicing bug would give) and an
R_q2i one patch column off.
"""

from __future__ import annotations

import copy

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import make_sample
from deco.explain.inputs import build_input
from deco.explain.methods import explain, explain_all

QUESTION, ANSWER = "What colour is the circle?", "Green."
BASELINES: dict = {}  # the last reference's baselines (rawattn, gradcam, log-prob), filled by _reference


def _train_a_few_steps(model, tokenizer, processor, steps: int = 4):
    """A copy of `model` after `steps` AdamW steps on shapes-world answers (projector + LLM)."""
    model = copy.deepcopy(model).train()
    inputs = []
    for index in range(4):
        scene, _, meta = make_sample(7, index, ("attribute",))
        inputs.append(build_input(tokenizer, processor, scene.image, meta["answer"], question=meta["question"]))
    params = [p for n, p in model.named_parameters() if not n.startswith("vision.")]
    opt = torch.optim.AdamW(params, lr=2e-3)
    torch.manual_seed(0)
    for step in range(steps):
        inp = inputs[step % len(inputs)]
        labels = torch.where(inp.target_mask, inp.input_ids, -100)
        loss = model(inp.input_ids[None], pixel_values=inp.pixel_values[None], labels=labels[None]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.projector.double()  # deco runs the same float64 weights as the reference: differences are the rule's
    model.llm.double()
    return model.eval()


def _chefer_self(attns, grads) -> torch.Tensor:
    """Eqs. 5-6: R = I; per layer R = R + E_h[(grad * A)^+] R (float64)."""
    t = attns[0].shape[-1]
    rel = torch.eye(t, dtype=torch.float64)
    for a, g in zip(attns, grads):
        cam = (g[0] * a[0]).clamp(min=0).mean(0)
        rel = rel + cam @ rel
    return rel


def _bar(rel: torch.Tensor) -> torch.Tensor:
    """Eqs. 8-9: (R - I) row-normalised, plus I (rows with nothing beyond I stay I)."""
    eye = torch.eye(rel.shape[0], dtype=rel.dtype)
    res = rel - eye
    total = res.sum(-1, keepdim=True)
    return torch.where(total > 0, res / torch.where(total > 0, total, 1.0), 0.0) + eye


def _reference(model, inp):
    """(R_t2q rows k q, R_q2i q n or None) by hand, float64."""
    vision = model.vision
    projector = copy.deepcopy(model.projector).eval()
    llm = copy.deepcopy(model.llm).eval()
    llm.config._attn_implementation = "eager"
    with torch.no_grad():
        feats = vision(inp.pixel_values[None]).double()  # 1 n d
    q_self = q_cross = None
    if hasattr(projector, "qformer"):
        queries = projector.query_tokens.expand(1, -1, -1)
        out = projector.qformer(query_embeds=queries, encoder_hidden_states=feats, output_attentions=True)
        # transformers 5 lists the cross maps in `attentions` too; with q=16 != n=576 the shapes tell them apart
        q_self = [a for a in out.attentions if a.shape[-1] == queries.shape[1]]
        q_cross = list(out.cross_attentions)
        assert len(q_self) == len(q_cross) == projector.layer_num
        tokens = projector.language_projection(out.last_hidden_state)
    else:
        tokens = projector(feats)
    ids = inp.input_ids.tolist()
    at = ids.index(model.image_token_id)
    text = llm.get_input_embeddings()(inp.input_ids[None])
    embeds = torch.cat([text[:, :at], tokens, text[:, at + 1 :]], dim=1)
    q = tokens.shape[1]
    out = llm(inputs_embeds=embeds, output_attentions=True)
    attns = list(out.attentions)
    for a in attns + (q_self or []) + (q_cross or []):
        a.retain_grad()
    # target token at text position p sits at p + q - 1 after the splice; its logit is read one position earlier
    targets = [p + q - 1 for p in inp.target_mask.nonzero().flatten().tolist()]
    target_ids = inp.input_ids[inp.target_mask]
    rows = torch.tensor(targets) - 1
    out.logits[0, rows, target_ids].sum().backward()
    r_t2q = _chefer_self([a.detach() for a in attns], [a.grad for a in attns])[rows][:, at : at + q]
    # the baselines on the last layer: raw head-mean attention; Grad-CAM (head weight = mean gradient, clamp after)
    last, grad = attns[-1].detach()[0], attns[-1].grad[0]
    BASELINES["rawattn"] = last.mean(0)[rows][:, at : at + q]
    BASELINES["gradcam"] = (grad.mean((1, 2))[:, None, None] * last).mean(0).clamp(min=0)[rows][:, at : at + q]
    BASELINES["log_prob"] = float(torch.log_softmax(out.logits[0, rows].detach(), -1).gather(1, target_ids[:, None]).sum())
    if q_self is None:
        return r_t2q, None
    cross, cross_grad = q_cross[-1].detach()[0], q_cross[-1].grad[0]
    BASELINES["gradcam_q2i"] = (cross_grad.mean((1, 2))[:, None, None] * cross).mean(0).clamp(min=0)
    r_qq = torch.eye(q, dtype=torch.float64)
    r_qi = torch.zeros(q, feats.shape[1], dtype=torch.float64)
    for a_s, a_c in zip(q_self, q_cross):
        cam_s = (a_s.grad[0] * a_s.detach()[0]).clamp(min=0).mean(0)
        r_qq, r_qi = r_qq + cam_s @ r_qq, r_qi + cam_s @ r_qi  # eq. 6 on both blocks, old R on the right
        cam_c = (a_c.grad[0] * a_c.detach()[0]).clamp(min=0).mean(0)
        r_qi = r_qi + _bar(r_qq).T @ cam_c  # eq. 10 with R_ii = I
    return r_t2q, r_qi


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool(torch.allclose(actual.double(), expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max())))



@pytest.fixture(scope="module", params=["avgpool", "qformer"])
def case(request):
    model, tokenizer, processor = tiny_model(request.param)
    model = _train_a_few_steps(model, tokenizer, processor)
    scene, _, _ = make_sample(1000, 5, ("attribute",))
    inp = build_input(tokenizer, processor, scene.image, ANSWER, question=QUESTION)
    ref_t2q, ref_q2i = _reference(model, inp)
    return request.param, model, tokenizer, inp, ref_t2q, ref_q2i, dict(BASELINES)


def test_r_t2q_equals_a_from_scratch_chefer_rule(case):
    projector, model, tokenizer, inp, ref_t2q, _, _ = case
    rel = explain(model, inp, "rgae", tokenizer)
    assert rel.r_t2q_tokens.shape == ref_t2q.shape == (2, 16)
    assert float(ref_t2q.max()) > 0 and float(ref_t2q.std()) > 0  # trained: not the identity's zeros
    assert _close(rel.r_t2q_tokens, ref_t2q), (rel.r_t2q_tokens - ref_t2q).abs().max()
    torch.testing.assert_close(rel.r_t2q.double(), ref_t2q.sum(0), rtol=1e-6, atol=1e-6 * float(ref_t2q.max()))


def test_the_comparison_rejects_columns_shifted_by_one(case, monkeypatch):
    """The check above is sharp: R_t2q sliced one visual token late (a slicing bug) does not pass it."""
    import deco.explain.llm_relevance as llm_relevance

    projector, model, tokenizer, inp, ref_t2q, _, _ = case
    original = llm_relevance.teacher_forced_forward

    def shifted(*args, **kwargs):
        trace = original(*args, **kwargs)
        trace.vis_start += 1
        return trace

    monkeypatch.setattr("deco.explain.methods.teacher_forced_forward", shifted)
    rel = explain(model, inp, "rgae", tokenizer)
    assert rel.r_t2q_tokens.shape == ref_t2q.shape
    assert not _close(rel.r_t2q_tokens, ref_t2q)
    assert _close(rel.r_t2q_tokens[:, :-1], ref_t2q[:, 1:])  # it is the same matrix, one column over


@pytest.mark.parametrize("case", ["qformer"], indirect=True)  # avgpool's R_q2i: test_explain_methods
def test_qformer_r_q2i_equals_a_from_scratch_gae(case):
    projector, model, tokenizer, inp, ref_t2q, ref_q2i, _ = case
    rel = explain(model, inp, "rgae", tokenizer)
    assert rel.r_q2i.shape == ref_q2i.shape == (16, 576)
    assert _close(rel.r_q2i, ref_q2i), (rel.r_q2i - ref_q2i).abs().max()
    # and the product: R_t2i = R_t2q R_q2i of the two independent halves
    assert _close(rel.r_t2i.flatten(), ref_t2q.sum(0) @ ref_q2i)
    shifted = torch.roll(ref_q2i, 1, dims=1)
    assert not _close(rel.r_q2i, shifted)




def test_baselines_and_the_log_prob_equal_their_rules(case):
    projector, model, tokenizer, inp, _, _, ref = case
    rel = explain_all(model, inp, ["rawattn", "gradcam"], tokenizer)
    assert _close(rel["rawattn"].r_t2q_tokens, ref["rawattn"]) and _close(rel["gradcam"].r_t2q_tokens, ref["gradcam"])
    assert rel["rawattn"].log_prob == pytest.approx(ref["log_prob"], rel=1e-4, abs=1e-6)  # float32 log-softmax
    if projector == "qformer":  # Grad-CAM's R_q2i: the Q-Former's last cross-attention
        assert _close(rel["gradcam"].r_q2i, ref["gradcam_q2i"])
    assert rel["gradcam"].num_queries == 16 == rel["rawattn"].num_queries
