"""Reducers in the model: the signals they read equal eager attention's, keep = all is the unreduced model,
FastV's cached generation equals a from-scratch reference without cache, and bad budgets name their key."""

import pytest
import torch
from test_mllm import IMG, LLM, VISION, VOCAB, make_model, pad_rows

from deco.models.attention import set_attention
from deco.models.llm import build_llm
from deco.models.mllm import MLLM
from deco.models.projectors import build_projector
from deco.models.reduction import ReductionConfigError, build_reducer, vision_signals
from deco.models.reduction.llm_runner import last_token_attention
from deco.models.vision import VisionTower

RAGGED = [[5, 6, IMG, 7, 8], [9, IMG, 10], [11, 12, 13, 14], [15, IMG, 16, 17, 18]]  # row 2: text only


def deep_model(layers=4, seed=0):
    """The test MLLM with a 4-layer LLM (FastV needs layers after K)."""
    torch.manual_seed(seed)
    vision = VisionTower(config=VISION)
    llm = build_llm(config={**LLM, "num_hidden_layers": layers}, vocab_size=VOCAB)
    proj = build_projector("linear", vision.hidden_size, LLM["hidden_size"], vision.num_patches)
    return MLLM(vision, proj, llm, image_token_id=IMG).eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(len(RAGGED), 3, 56, 56, generator=torch.Generator().manual_seed(0))


def test_cls_attention_equals_eager_maps(pixels):
    model = make_model("linear", seed=1)
    with torch.no_grad():
        sig = vision_signals(model.vision, pixels)  # the tower stays on SDPA
        set_attention(model, "eager")
        _, maps = model.vision.forward_with_attentions(pixels)
    assert torch.allclose(sig.cls_attn, maps[-1][:, :, 0, 1:], atol=1e-5)
    assert sig.hidden.shape == (len(RAGGED), 17, VISION["hidden_size"])


def test_last_token_attention_equals_eager_maps():
    model = deep_model()
    ids, mask = pad_rows(RAGGED, "left")
    set_attention(model, "eager")
    with torch.no_grad():
        embeds, mask, _, _ = model.prepare_inputs_embeds(ids, mask, torch.randn(4, 3, 56, 56), padding_side="left")
        from deco.models.generation import position_ids_from_mask
        pos = position_ids_from_mask(mask)
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_attentions=True,
                        output_hidden_states=True)
        ours = last_token_attention(model.llm, 2, out.hidden_states[2], pos, mask)
    assert torch.allclose(ours, out.attentions[2].mean(1)[:, -1], atol=1e-5)


@pytest.mark.parametrize("name,knobs", [("divprune", {}), ("pool", {}), ("fastv", {"layer": 2})])
def test_keep_all_is_the_unreduced_model(pixels, name, knobs):
    model = deep_model(seed=4)
    ids, mask = pad_rows(RAGGED, "left")
    with torch.no_grad():
        base_logits = model(ids, mask, pixels, padding_side="left").logits
        base_tokens = model.generate(ids, mask, pixels, max_new_tokens=6)
        model.set_reduction(build_reducer(name, keep=16, **knobs))
        out = model(ids, mask, pixels, padding_side="left").logits
        tokens = model.generate(ids, mask, pixels, max_new_tokens=6)
    real = mask_after_merge(model, ids, mask)
    assert torch.allclose(out[real], base_logits[real], atol=1e-4)
    assert torch.equal(tokens, base_tokens)


def mask_after_merge(model, ids, mask):
    with torch.no_grad():
        return model.prepare_inputs_embeds(ids, mask, torch.zeros(len(ids), 3, 56, 56), padding_side="left")[1].bool()


def masked_reference(model, row, pixels, layer, keep, n_new):
    """FastV from scratch, no cache, through transformers' own eager forward: the kept set comes from the prompt's
    layer K-1 attention maps (output_attentions); layers >= K get the dropped image columns masked out of every
    query's keys (with original positions this is the pruned sequence for every kept token); each new token
    recomputes the whole sequence."""
    embed = model.llm.get_input_embeddings()
    ids = torch.tensor([row])
    with torch.no_grad():
        prompt, _, _, img = model.prepare_inputs_embeds(ids, None, pixels)
        out = model.llm(inputs_embeds=prompt, output_attentions=True)
        dropped = []
        if int(img[0]) >= 0:
            start = int(img[0])
            scores = out.attentions[layer - 1].mean(1)[0, -1, start:start + 16]
            kept = set((scores.topk(keep).indices + start).tolist())
            dropped = [c for c in range(start, start + 16) if c not in kept]

        def hide(_module, args, kwargs):
            m = kwargs["attention_mask"].clone()
            m[..., dropped] = torch.finfo(m.dtype).min
            kwargs["attention_mask"] = m
            return args, kwargs

        hooks = [model.llm.model.layers[i].register_forward_pre_hook(hide, with_kwargs=True)
                 for i in range(layer, len(model.llm.model.layers))]
        try:
            seq, new = prompt, []
            for _ in range(n_new):
                token = int(model.llm(inputs_embeds=seq).logits[0, -1].argmax())
                new.append(token)
                seq = torch.cat([seq, embed(torch.tensor([[token]]))], 1)
        finally:
            for h in hooks:
                h.remove()
    return new


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("layer,keep", [(1, 3), (2, 5), (3, 1)])
def test_fastv_generation_equals_reference_without_cache(pixels, attn, layer, keep):
    model = deep_model(seed=layer)
    ids, mask = pad_rows(RAGGED, "left")
    set_attention(model, attn)
    with torch.no_grad():
        unreduced = model.generate(ids, mask, pixels, max_new_tokens=6)
        model.set_reduction(build_reducer("fastv", keep=keep, layer=layer))
        out = model.generate(ids, mask, pixels, max_new_tokens=6)
    assert not torch.equal(out, unreduced)  # the pruning changes the answers: the comparison below is not vacuous
    set_attention(model, "eager")
    reference = [masked_reference(model, r, pixels[i:i + 1], layer, keep, 6) for i, r in enumerate(RAGGED)]
    assert out.tolist() == reference


@pytest.mark.parametrize("name,knobs,keep,key", [
    ("pool", {}, 0, "reduction.keep=0"), ("visionzip", {}, 17, "reduction.keep=17"),
    ("pool", {}, 10, "reduction.keep=10 must be a perfect square"), ("divprune", {}, -3, "reduction.keep=-3"),
    ("fastv", {"layer": 4}, 8, "reduction.layer=4"), ("visionzip", {"contextual": 8}, 8, "reduction.contextual=8"),
])
def test_bad_budget_names_the_key(name, knobs, keep, key):
    model = deep_model()
    with pytest.raises(ReductionConfigError, match=key.replace(".", r"\.")):
        model.set_reduction(build_reducer(name, keep=keep, **knobs))


def test_unknown_reducer_and_mixing_projector_are_errors():
    with pytest.raises(ReductionConfigError, match="reduction.name=zip is unknown"):
        build_reducer("zip", keep=4)
    with pytest.raises(ReductionConfigError, match="has no key"):
        build_reducer("pool", keep=4, layer=2)
    with pytest.raises(ReductionConfigError, match="mixes patches: use reduction=fastv"):
        make_model("avgpool").set_reduction(build_reducer("visionzip", keep=4))
    make_model("avgpool").set_reduction(build_reducer("fastv", keep=2, layer=1))  # FastV works after any projector
