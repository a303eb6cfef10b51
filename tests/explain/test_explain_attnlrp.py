"""AttnLRP (deco.explain.attnlrp) against an explicit layer-by-layer LRP propagation in float64 (lrp_reference.py).

The reference never takes a gradient: it runs the Llama forward by hand (RMSNorm, q/k/v, RoPE as a matrix per
position, grouped-query causal attention, SwiGLU, residuals, lm_head) and carries relevance back rule by rule
(Achtibat et al., ICML 2024): epsilon rule on every learned linear layer, LRP-0 on the parameter-free linear maps
(residual sums, RoPE), identity rule on the norms and on SiLU, the uniform (50/50) rule on A V, Q K^T and
gate * up, the softmax rule R_in_i = x_i (R_out_i - s_i sum_j R_out_j). Its switches (`split`, `softmax`) make
the "mutants" that the comparison must reject.
"""

from __future__ import annotations

import copy

import pytest
import torch
from explain_helpers import tiny_model
from lrp_reference import D, reference, tiny_llama

from deco.data.shapes import make_sample
from deco.explain.attnlrp import attnlrp, attnlrp_rules, input_times_gradient, layer_norm_forward
from deco.explain.llm_relevance import eval_mode, teacher_forced_forward
from deco.explain.inputs import build_input
from deco.explain.methods import explain
from deco.models.attention import attention


def _deco(llm, embeds, rows, targets, eps=None):
    """deco's relevance per input token: one backward of the summed target logits under attnlrp_rules (its
    default epsilon unless `eps` is given)."""
    embeds = embeds.clone().requires_grad_(True)
    with attnlrp_rules(llm) if eps is None else attnlrp_rules(llm, eps):
        logits = llm(inputs_embeds=embeds[None]).logits[0]
        return input_times_gradient(logits[rows, targets].sum(), embeds)


ROWS, TARGETS = torch.tensor([5, 8]), torch.tensor([3, 17])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attnlrp_equals_explicit_lrp_per_token(attn):
    llm = tiny_llama()
    embeds = torch.randn(10, 16, dtype=D, generator=torch.Generator().manual_seed(1))
    logits, rel = reference(llm, embeds, ROWS, TARGETS)
    with torch.no_grad():
        torch.testing.assert_close(llm(inputs_embeds=embeds[None]).logits[0], logits, rtol=1e-5, atol=1e-5)
    with attention(llm, attn):  # the rules sit on q/k/v and leave the softmax's own backward: any kernel
        ours = _deco(llm, embeds, ROWS, TARGETS)
    expected = rel.sum(-1)
    scale = expected.abs().max()
    err = float((ours - expected).abs().max() / scale)
    assert err < (5e-7 if attn == "sdpa" else 2e-6)  # HF's RoPE angles (and eager's softmax) are float32
    assert float(expected[9]) == 0.0 and float(expected[:9].abs().min()) > 0  # causal: nothing after row 8
    # the mutants: no 50/50 split, the softmax rule replaced by the identity rule or by a stop (CP-LRP)
    for mutant in (dict(split=1.0), dict(softmax="identity"), dict(softmax="stop")):
        other = reference(llm, embeds, ROWS, TARGETS, **mutant)[1].sum(-1)
        assert float((ours - other).abs().max() / scale) > 1e-2, mutant
    assert all(p.grad is None for p in llm.parameters())


def test_attnlrp_epsilon_rule_and_restored_model():
    llm = tiny_llama(seed=3, layers=1)
    embeds = torch.randn(6, 16, dtype=D, generator=torch.Generator().manual_seed(4))
    rows, targets = torch.tensor([5]), torch.tensor([7])
    found = []
    for eps in (0.0, 0.5):  # a large epsilon absorbs visibly: the reference must follow it too
        expected = reference(llm, embeds, rows, targets, eps=eps)[1].sum(-1)
        found.append(expected)
        with attention(llm, "sdpa"):  # float64 throughout (eager's softmax runs in float32)
            ours = _deco(llm, embeds, rows, targets, eps)
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7 * float(expected.abs().max()))
    assert float((found[0] - found[1]).abs().max()) > 1e-3 * float(found[0].abs().max())
    # outside the context the model is plain again (gradient x input differs from AttnLRP), nothing left behind
    e = embeds.clone().requires_grad_(True)
    plain = input_times_gradient(llm(inputs_embeds=e[None]).logits[0, 5, 7], e)
    assert float((plain - expected).abs().max()) > 1e-2 * float(expected.abs().max())
    assert not any("forward" in m.__dict__ for m in llm.modules())
    assert not any(m._forward_hooks for m in llm.modules())
    with pytest.raises(ValueError, match="epsilon=-1"):
        with attnlrp_rules(llm, -1.0):
            pass


def _softmax_leak(attns, grads):
    """Relevance the softmax rule gives to no input: sum_i R_out_i - sum_i x_i (R_out_i - s_i sum_j R_out_j)
    per row, with R_out = A g / 2 (A V's split) and x = log s + const (the constant cancels: the rule's
    terms sum to 0 over a row)."""
    leak = 0.0
    for a, g in zip(attns, grads):
        r = a * g / 2
        logs = torch.where(a > 0, a.clamp(min=1e-300).log(), 0.0)
        leak += float(r.sum() - (logs * (r - a * r.sum(-1, keepdim=True))).sum())
    return leak


def test_attnlrp_conserves_the_logit_up_to_the_softmax_leak():
    """A bias-free Llama with eps = 0: every rule but the softmax's is conservative (identity and uniform rules,
    LRP-0 sums, the epsilon rule at eps 0), so sum_tokens R_in = logit - (what the softmax rule leaks, the
    bias-absorption term of its linearisation). The leak is measured from the attention maps and their
    gradients, so the balance is exact (to float32 softmax precision), and the leak itself is not negligible."""
    llm = tiny_llama(seed=5)
    with torch.no_grad():
        llm.model.layers[0].mlp.up_proj.weight[0] = 0.0  # an output exactly 0: eps = 0 must stay plain, not 0 / 0
    embeds = torch.randn(8, 16, dtype=D, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    with attnlrp_rules(llm, 0.0):
        out = llm(inputs_embeds=embeds[None], output_attentions=True)
        logit = out.logits[0, 7, 11]
        grads = torch.autograd.grad(logit, [embeds, *out.attentions])
    total = float((embeds.detach() * grads[0]).sum())
    leak = _softmax_leak([a.detach() for a in out.attentions], grads[1:])
    logit = float(logit.detach())
    assert total + leak == pytest.approx(logit, rel=1e-6, abs=1e-7)  # measured: 9e-9 of 1.15
    assert abs(leak) > 1e-2 * abs(logit) and abs(total - logit) > 1e-2 * abs(logit)  # not conserved without it


def test_attnlrp_method_reads_the_visual_tokens_of_the_explicit_propagation():
    model, tokenizer, processor = tiny_model("avgpool")
    scene, _, meta = make_sample(1000, 5, ("attribute",))
    inp = build_input(tokenizer, processor, scene.image, meta["answer"], question=meta["question"])
    rel = explain(model, inp, "attnlrp", tokenizer)
    q = model.num_visual_tokens
    at = inp.input_ids.tolist().index(model.image_token_id)
    with torch.no_grad():
        tokens = model.encode_images(inp.pixel_values[None])
        embeds = model.prepare_inputs_embeds(inp.input_ids[None], image_tokens=tokens)[0][0]
    rows = torch.tensor([p + q - 2 for p in inp.target_mask.nonzero().flatten().tolist()])
    targets = inp.input_ids[inp.target_mask]
    expected = reference(copy.deepcopy(model.llm).to(D), embeds, rows, targets)[1].sum(-1)[at : at + q]
    assert rel.method == "attnlrp" and rel.r_t2q_tokens.shape == (1, q) and len(rel.target_tokens) == 1
    torch.testing.assert_close(rel.r_t2q, expected.float(), rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    assert all(p.grad is None for p in model.parameters())
    shifted = torch.roll(expected, 1).float()  # the columns one position off must not pass
    assert not torch.allclose(rel.r_t2q, shifted, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    with eval_mode(model):  # the method itself, called as METHODS calls it (the registry holds this function)
        trace = teacher_forced_forward(model, inp, need_projector_maps=False)
        direct = attnlrp(model, trace, ["Re", "d"], inp=inp)
        with pytest.raises(ValueError, match="it needs the input"):
            attnlrp(model, trace, ["Re", "d"])
    torch.testing.assert_close(direct.r_t2q, expected.float(), rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    assert direct.target_tokens == ["Red"] and direct.score == pytest.approx(float(trace.score.detach()))


def test_attnlrp_refuses_an_llm_without_its_rules():
    llm = tiny_llama(layers=1)
    llm.model.layers[0].mlp.act_fn = torch.nn.Tanh()  # still a gated MLP: the identity rule covers any act_fn
    with attnlrp_rules(llm):
        pass
    llm.model.norm = torch.nn.GroupNorm(1, 16)
    with pytest.raises(ValueError, match=r"normalisation layer model.norm \(GroupNorm\)"):
        with attnlrp_rules(llm):
            pass
    llm.model.norm = torch.nn.Sequential(torch.nn.GELU())
    with pytest.raises(ValueError, match=r"nonlinearity model.norm.0 \(GELU\)"):
        with attnlrp_rules(llm):
            pass
    with pytest.raises(ValueError, match="Llama-style LLM"):
        with attnlrp_rules(torch.nn.Sequential(torch.nn.Linear(2, 2))):
            pass
    plain_mlp = tiny_llama(layers=1)
    plain_mlp.model.layers[0].mlp = torch.nn.Identity()
    with pytest.raises(ValueError, match="has 1 attention and 0 gated MLP modules"):
        with attnlrp_rules(plain_mlp):
            pass
    no_attention = tiny_llama(layers=1)
    no_attention.model.layers[0].self_attn = torch.nn.Identity()
    with pytest.raises(ValueError, match="has 0 attention and 1 gated MLP modules"):
        with attnlrp_rules(no_attention):
            pass

    class OddRMSNorm(torch.nn.Module):  # e.g. Gemma's (1 + weight, `eps`): not the rule's RMSNorm
        eps = 1e-6

        def forward(self, x):
            return x

    odd = tiny_llama(layers=1)
    odd.model.norm = OddRMSNorm()
    with pytest.raises(ValueError, match=r"normalisation layer model.norm \(OddRMSNorm\)"):
        with attnlrp_rules(odd):
            pass


def test_layer_norm_rule_keeps_the_forward_and_treats_the_std_as_a_constant():
    x = torch.randn(2, 5, 6, dtype=D, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
    g_out = torch.randn(2, 5, 6, dtype=D, generator=torch.Generator().manual_seed(8))
    affine = torch.nn.LayerNorm(6, eps=0.1, dtype=D)
    with torch.no_grad():
        affine.weight.copy_(torch.randn(6, dtype=D))
        affine.bias.copy_(torch.randn(6, dtype=D))
    for norm in (affine, torch.nn.LayerNorm(6, eps=0.1, elementwise_affine=False, dtype=D)):
        y = layer_norm_forward(norm, x)
        torch.testing.assert_close(y, norm(x))
        (grad,) = torch.autograd.grad(y, x, g_out)
        inv = 1 / torch.sqrt(x.detach().var(-1, unbiased=False, keepdim=True) + 0.1)
        scaled = g_out * inv * (norm.weight.detach() if norm.weight is not None else 1.0)
        torch.testing.assert_close(grad, scaled - scaled.mean(-1, keepdim=True))  # centring's transpose, 1/std fixed
    llm = tiny_llama(layers=1)
    llm.model.norm = torch.nn.LayerNorm(16, dtype=D)
    e = torch.randn(1, 4, 16, dtype=D)
    with torch.no_grad():
        before = llm(inputs_embeds=e).logits
        with attnlrp_rules(llm):
            assert "forward" in llm.model.norm.__dict__  # the rule is installed on the LLM's LayerNorm
            during = llm(inputs_embeds=e).logits  # the same forward (HF's RMSNorm rounds through float32, ours not)
        torch.testing.assert_close(during, before, rtol=1e-5, atol=1e-5)


def test_input_times_gradient_of_an_unrelated_score_is_zero_per_vector():
    inputs = torch.randn(3, 4, 5, requires_grad=True)
    other = torch.ones(2, requires_grad=True)
    assert torch.equal(input_times_gradient(other.sum() * 2, inputs), torch.zeros(3, 4))


def test_attnlrp_through_lora_adapters_equals_the_merged_model():
    """A LoRA-wrapped LLM (deco's finetune stage): the rules find the wrapped q/k/v (peft's Linear wrappers) and
    each Linear inside; with eps = 0 the relevance equals the explicit propagation on the merged weights."""
    from deco.models.llm import apply_lora

    llm = tiny_llama(seed=9)
    wrapped = apply_lora(copy.deepcopy(llm), r=2).eval()
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.3)  # adapters that change the model
    embeds = torch.randn(10, 16, dtype=D, generator=torch.Generator().manual_seed(10))
    with attention(wrapped, "sdpa"):
        ours = _deco(wrapped, embeds, ROWS, TARGETS, eps=0.0)
    merged = copy.deepcopy(wrapped).merge_and_unload()
    expected = reference(merged, embeds, ROWS, TARGETS, eps=0.0)[1].sum(-1)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    plain = reference(llm, embeds, ROWS, TARGETS, eps=0.0)[1].sum(-1)
    assert float((plain - expected).abs().max()) > 1e-2 * float(expected.abs().max())  # the adapters matter
