"""MLLM: vectorised placeholder merge (ragged, text-only rows, both padding sides) against a per-row
reference, loss through the merge, overfitting a fixed batch, batched generation == one-by-one,
LoRA wrapping and building from config mappings."""

import warnings

import pytest
import torch

from deco.models.build import build_mllm, count_parameters
from deco.models.llm import apply_lora, build_llm, find_linear_names
from deco.models.mllm import MLLM, position_ids_from_mask
from deco.models.projectors import build_projector
from deco.models.vision import VisionTower

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "image_size": 56, "patch_size": 14}  # 4x4 patch grid
LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 4, "max_position_embeddings": 256}
VOCAB, IMG, PAD = 40, 39, 0


def make_model(projector="avgpool", seed=0, **kwargs):
    torch.manual_seed(seed)
    vision = VisionTower(config=VISION)
    llm = build_llm(config=LLM, vocab_size=VOCAB)
    kwargs = {"query_num": 4, **kwargs} if projector in ("avgpool", "maxpool", "qformer") else kwargs
    proj = build_projector(projector, vision.hidden_size, LLM["hidden_size"], vision.num_patches, **kwargs)
    for p in vision.parameters():
        p.requires_grad_(False)
    return MLLM(vision, proj, llm, image_token_id=IMG).eval()


def pad_rows(rows, side, value=PAD):
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), value, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(t - len(r), t)
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask


ROWS = [[5, 6, IMG, 7, 8], [9, IMG, 10], [11, 12, 13, 14]]  # the last row is text-only


def reference_merge(model, rows, labels_rows, visual, side):
    """Per-row merge written as a loop: the sequences the vectorised merge must produce."""
    embed = model.llm.get_input_embeddings()
    q = visual.shape[1]
    seqs, labs = [], []
    k = 0
    for r, lab in zip(rows, labels_rows):
        parts, lparts = [], []
        for tok, l in zip(r, lab):
            if tok == IMG:
                parts.append(visual[k])
                lparts += [-100] * q
                k += 1
            else:
                parts.append(embed(torch.tensor([tok])))
                lparts.append(l)
        seqs.append(torch.cat(parts))
        labs.append(lparts)
    total = max(len(s) for s in seqs)
    d = seqs[0].shape[-1]
    emb = torch.zeros(len(rows), total, d)
    mask = torch.zeros(len(rows), total, dtype=torch.long)
    lab_out = torch.full((len(rows), total), -100)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        sl = slice(0, len(s)) if side == "right" else slice(total - len(s), total)
        emb[i, sl], mask[i, sl], lab_out[i, sl] = s, 1, torch.tensor(lab)
    return emb, mask, lab_out


@pytest.fixture(scope="module")
def model():
    return make_model("avgpool")


@pytest.mark.parametrize("side", ["right", "left"])
def test_merge_matches_per_row_reference(model, side):
    ids, mask = pad_rows(ROWS, side)
    labels = torch.where(mask.bool(), ids + 100, torch.full_like(ids, -100))  # distinct label per token
    labels_rows = [[t + 100 for t in r] for r in ROWS]
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        visual = model.encode_images(pixels[:2])  # rows 0 and 1 hold the placeholders
        emb, m, lab, pos = model.prepare_inputs_embeds(ids, mask, pixels, labels, padding_side=side)
        ref_emb, ref_mask, ref_lab = reference_merge(model, ROWS, labels_rows, visual, side)
    q = model.num_visual_tokens
    assert q == 4 and emb.shape == (3, ids.shape[1] + q - 1, LLM["hidden_size"])
    torch.testing.assert_close(emb * m[..., None], ref_emb * ref_mask[..., None])
    assert torch.equal(m, ref_mask) and torch.equal(lab, ref_lab)
    offset = 0 if side == "right" else ids.shape[1] - torch.tensor([5, 3, 4])
    expected_pos = torch.tensor([2, 1, -1]) + torch.where(torch.tensor([True, True, False]), offset, 0)
    assert torch.equal(pos, expected_pos)
    for row in (0, 1):  # visual tokens sit exactly at the placeholder
        torch.testing.assert_close(emb[row, pos[row] : pos[row] + q], visual[row])
    if side == "left":  # right-aligned: every row ends with a real token
        assert bool(m[:, -1].all())


def test_pixel_values_per_row_or_per_image_and_errors(model):
    ids, mask = pad_rows(ROWS, "right")
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        a = model.prepare_inputs_embeds(ids, mask, pixels)[0]
        b = model.prepare_inputs_embeds(ids, mask, pixels[:2])[0]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="expected 3 .* or 2"):
        model.prepare_inputs_embeds(ids, mask, pixels[:1])
    with pytest.raises(ValueError, match="pixel_values is None"):
        model.prepare_inputs_embeds(ids, mask, None)
    two = torch.tensor([[1, IMG, 2, IMG]])
    with pytest.raises(ValueError, match=r"rows \[0\] hold more than one <image>"):
        model.prepare_inputs_embeds(two, torch.ones_like(two), pixels[:1])
    with pytest.raises(ValueError, match="not left-padded"):
        model.prepare_inputs_embeds(ids, mask, pixels, padding_side="left")
    text_only = torch.tensor([[1, 2, 3]])
    emb, m, _, pos = model.prepare_inputs_embeds(text_only, torch.ones_like(text_only))
    assert emb.shape[1] == 3 and pos.tolist() == [-1]


def test_loss_equals_llm_on_reference_sequence(model):
    ids, mask = pad_rows(ROWS, "right")
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        out = model(ids, mask, pixels, labels)
        visual = model.encode_images(pixels[:2])
        emb, m, lab = reference_merge(model, ROWS, [list(r) for r in ROWS], visual, "right")
        ref = model.llm(inputs_embeds=emb, attention_mask=m, labels=lab)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.logits * m[..., None], ref.logits * m[..., None])


def test_left_padding_logits_match_unpadded(model):
    ids, mask = pad_rows(ROWS, "left")
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        batched = model(ids, mask, pixels, padding_side="left").logits[:, -1]
        for i, r in enumerate(ROWS):
            single = model(torch.tensor([r]), None, pixels[i : i + 1], padding_side="left").logits[:, -1]
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("projector", ["linear", "qformer", "avgpool"])
def test_overfits_a_fixed_batch(projector):
    model = make_model(projector, seed=1).train()
    ids, mask = pad_rows([[1, IMG, 5, 6, 7, 8], [2, IMG, 9, 10, 11]], "right")
    labels = torch.where(mask.bool() & (ids != IMG), ids, torch.full_like(ids, -100))
    labels[:, :2] = -100  # the prompt is not trained on
    pixels = torch.randn(2, 3, 56, 56)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for step in range(15):
        loss = model(ids, mask, pixels, labels).loss
        opt.zero_grad()
        loss.backward()
        if step == 0:  # the loss reaches the projector through the merge
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is None for p in model.vision.parameters())  # frozen tower


def test_generate_batched_equals_one_by_one(model):
    ids, mask = pad_rows(ROWS, "left")
    pixels = torch.randn(3, 3, 56, 56)
    batched = model.generate(ids, mask, pixels, max_new_tokens=6)
    assert batched.shape == (3, 6)
    for i, r in enumerate(ROWS):
        single = model.generate(torch.tensor([r]), None, pixels[i : i + 1], max_new_tokens=6)
        assert torch.equal(batched[i], single[0]), (i, batched[i], single[0])
    # the KV-cached loop equals greedy decoding by full recomputation
    with torch.no_grad():
        for i, r in enumerate(ROWS):
            seq = list(r)
            for _ in range(6):
                logits = model(torch.tensor([seq]), None, pixels[i : i + 1]).logits
                seq.append(int(logits[0, -1].argmax()))
            assert seq[len(r) :] == batched[i].tolist()


def test_generate_stops_at_eos_and_pads(model):
    ids, mask = pad_rows(ROWS, "left")
    pixels = torch.randn(3, 3, 56, 56)
    free = model.generate(ids, mask, pixels, max_new_tokens=5)
    eos = int(free[0, 1])  # make row 0's second token the EOS
    out = model.generate(ids, mask, pixels, max_new_tokens=5, eos_token_id=eos, pad_token_id=PAD)
    for i in range(3):
        hits = (free[i] == eos).nonzero().flatten()
        stop = int(hits[0]) + 1 if len(hits) else 5
        assert torch.equal(out[i, :stop], free[i, :stop])
        assert bool((out[i, stop:] == PAD).all())
    # all rows hit EOS at step 0 -> one token only
    first = free[:, 0].unique().tolist()
    assert model.generate(ids, mask, pixels, max_new_tokens=5, eos_token_id=first).shape == (3, 1)


def test_lora_targets_all_linear_layers():
    pytest.importorskip("peft")
    model = make_model("avgpool")
    assert find_linear_names(model.llm) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    with warnings.catch_warnings(record=True) as seen:  # peft's read of transformers' deprecated
        warnings.simplefilter("always")  # `is_gradient_checkpointing`: 27 of the suite's 47 warnings, in every LoRA run
        model.llm = apply_lora(model.llm, r=4)
    assert [str(w.message) for w in seen] == []
    trainable = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    ids, mask = pad_rows(ROWS, "right")
    out = model(ids, mask, torch.randn(3, 3, 56, 56), labels=ids.masked_fill(ids == IMG, -100))
    assert torch.isfinite(out.loss)
    gen = model.generate(*pad_rows(ROWS, "left"), torch.randn(3, 3, 56, 56), max_new_tokens=2)
    assert gen.shape == (3, 2)


class FakeTokenizer:
    """The two tokenizer methods build_mllm uses."""

    unk_token, unk_token_id = "<unk>", 0

    def __init__(self, tokens):
        self.vocab = {t: i for i, t in enumerate(["<unk>", *tokens])}

    def __len__(self):
        return len(self.vocab)

    def convert_tokens_to_ids(self, token):
        return self.vocab.get(token, self.unk_token_id)


def test_build_mllm_from_config_mappings():
    omegaconf = pytest.importorskip("omegaconf")
    tok = FakeTokenizer([f"w{i}" for i in range(20)] + ["<image>"])
    model_cfg = omegaconf.OmegaConf.create({"vision": {"config": VISION, "select_layer": -2}, "llm": {"config": LLM}})
    model = build_mllm(model_cfg, {"name": "avgpool", "query_num": 4, "mlp_depth": 2}, tok)
    assert model.image_token_id == 21 and model.num_visual_tokens == 4
    assert model.llm.get_input_embeddings().num_embeddings == len(tok) == 22
    assert model.projector.in_dim == 32 and model.projector.out_dim == 64 and model.projector.num_patches == 16
    assert count_parameters(model.projector) == 32 * 64 + 64 + 64 * 64 + 64
    for p in model.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 0 and count_parameters(model, trainable_only=False) > 0
    with pytest.raises(ValueError, match="no '<image>' token"):
        build_mllm(model_cfg, {"name": "linear"}, FakeTokenizer(["a"]))
    with pytest.raises(ValueError, match="Unknown projector 'nope'"):
        build_mllm(model_cfg, {"name": "nope"}, tok)
    with pytest.raises(ValueError, match=r"model.vision has unknown keys \['bogus'\]"):
        build_mllm({"vision": {"config": VISION, "bogus": 1}, "llm": {"config": LLM}}, {"name": "linear"}, tok)


def test_build_llm_from_local_dir_resizes_vocab(tmp_path):
    torch.manual_seed(0)
    build_llm(config=LLM, vocab_size=VOCAB).save_pretrained(tmp_path / "llm")
    llm = build_llm(name_or_path=str(tmp_path / "llm"), vocab_size=VOCAB + 3, torch_dtype="float32")
    assert llm.get_input_embeddings().num_embeddings == VOCAB + 3
    assert llm.config._attn_implementation == "eager"
    assert build_llm(config=LLM, vocab_size=VOCAB, torch_dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="missing_llm"):
        build_llm(name_or_path=str(tmp_path / "missing_llm"))
    with pytest.raises(ValueError, match="needs vocab_size"):
        build_llm(config=LLM)
    with pytest.raises(ValueError, match="torch_dtype='fp8' is unknown"):
        build_llm(config=LLM, vocab_size=VOCAB, torch_dtype="fp8")
