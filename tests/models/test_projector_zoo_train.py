"""The projector zoo inside the tiny MLLM, built from the real configs: config validation of `query_num`,
a few projector-only training steps that lower the loss on a fixed batch, and `deco.explain`'s three maps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from deco.data.shapes import render_scene
from deco.explain.export import export_relevance
from deco.explain.inputs import build_input
from deco.explain.methods import explain_all
from deco.models.formats.projector_type import paper_depth
from deco.utils.config import ConfigError, validate_train_config

ZOO = ("cabstractor", "dabstractor", "pixelshuffle", "ldp", "ldpv2", "tokenpacker", "resampler")
STRUCTURAL = ("cabstractor", "pixelshuffle", "ldp", "ldpv2")
_MODELS: dict[str, tuple] = {}


def tiny(projector: str, query_num: int = 16, *overrides: str):
    """(model, tokenizer, processor, projector config) of the tiny default with `projector`, seed 0."""
    key = " ".join([projector, *overrides])
    if key not in _MODELS:
        from deco.data.image import load_image_processor
        from deco.data.tokenizer import load_tokenizer
        from deco.models.build import build_mllm

        cfg = compose_config("train", [f"projector={projector}", f"query_num={query_num}", *overrides],
                             Path(tempfile.mkdtemp()))
        validate_train_config(cfg)
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        projector_cfg = OmegaConf.to_container(cfg.projector, resolve=True)
        tokenizer = load_tokenizer(**model_cfg["tokenizer"])
        torch.manual_seed(0)
        model = build_mllm(model_cfg, dict(projector_cfg), tokenizer)
        _MODELS[key] = (model, tokenizer, load_image_processor(**model_cfg["image_processor"]), projector_cfg)
    return _MODELS[key]


@pytest.mark.parametrize(("overrides", "message"), [
    (["projector=pixelshuffle", "query_num=100"], "query_num=100 does not fit projector=pixelshuffle"),
    (["projector=tokenpacker", "query_num=81"], "use one of: 1, 4, 9, 16, 36, 64, 144, 576"),
    (["projector=ldp", "query_num=25"], "query_num=25 does not fit projector=ldp"),
    (["projector=cabstractor", "query_num=150"], "query_num=150 does not fit projector=cabstractor"),
    (["projector=dabstractor", "query_num=0"], "query_num=0 must be a positive integer"),
    (["projector=resampler", "query_num=1000"], "query_num=1000 is larger than the vision tower's 576 patches"),
])
def test_config_validation_names_the_key_and_allowed_values(train_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_config(*overrides))
    assert message in str(error.value)


@pytest.mark.parametrize(("projector", "query_num"), [("ldpv2", 81), ("cabstractor", 81), ("resampler", 50),
                                                      ("pixelshuffle", 144), ("tokenpacker", 64)])
def test_config_validation_accepts_what_each_method_can_do(train_config, projector, query_num):
    validate_train_config(train_config(f"projector={projector}", f"query_num={query_num}"))


def fixed_batch(tokenizer, processor):
    out = []
    for seed, text in ((1000, "A green triangle"), (1001, "A red circle")):
        inp = build_input(tokenizer, processor, render_scene(seed, 2).image, text, template="plain")
        labels = torch.where(inp.target_mask, inp.input_ids, -100)
        out.append((inp.input_ids[None], inp.pixel_values[None], labels[None]))
    return out


@pytest.mark.parametrize("projector", ZOO)
def test_a_few_projector_steps_lower_the_loss(projector):
    model, tokenizer, processor, _ = tiny(projector)
    model = model.train()
    model.llm.requires_grad_(False)  # the pretrain stage: only the projector learns
    model.vision.requires_grad_(False)
    params = [p for p in model.projector.parameters() if p.requires_grad]
    assert params and model.num_visual_tokens == 16
    opt = torch.optim.Adam(params, lr=2e-3)
    batch = fixed_batch(tokenizer, processor)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = sum(model(input_ids=i, pixel_values=p, labels=y).loss for i, p, y in batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.llm.requires_grad_(True)
    model.eval()
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("projector", ZOO)
def test_explain_writes_the_three_maps(projector, tmp_path):
    # random tower and LLM (as the maps' structure was checked): GAE's positive clamp can zero a cross-attention
    # projector's whole R_q2i on some trained models (tokenpacker on the zoo), which is a property, not a bug
    model, tokenizer, processor, cfg = tiny(projector, 16, "model=tiny_scratch")
    inp = build_input(tokenizer, processor, render_scene(1000, 3).image, "A pot of green plants")
    results = explain_all(model.eval(), inp, ["rgae", "rawattn", "gradcam"], tokenizer)
    for method, rel in results.items():
        assert rel.r_q2i.shape == (16, 576) and rel.r_t2q.shape == (16,)
        assert bool((rel.r_q2i >= 0).all())
        assert method == "gradcam" or float(rel.r_q2i.sum()) > 0  # Grad-CAM may clamp a map to zero
        if projector in STRUCTURAL:  # receptive fields / blocks: rows sum to 1, the same for every method
            torch.testing.assert_close(rel.r_q2i.sum(1), torch.ones(16))
            torch.testing.assert_close(rel.r_q2i, results["rgae"].r_q2i)
    files = export_relevance(results["rgae"], inp, tmp_path, f"{projector}{paper_depth(cfg)}_16")
    assert sorted(files) == ["R_q2i", "R_t2i", "R_t2q", "tensors"]
    assert all(path.stat().st_size > 0 for path in files.values())
    if projector == "tokenpacker":  # each query's relevance stays inside its 6 x 6 region
        grid = results["rgae"].r_q2i.reshape(4, 4, 24, 24)
        outside = grid.clone()
        for i in range(4):
            for j in range(4):
                outside[i, j, 6 * i:6 * i + 6, 6 * j:6 * j + 6] = 0
        assert float(outside.abs().sum()) == 0.0
    if projector == "pixelshuffle":  # exact: query (i, j) is its 6 x 6 block, 1/36 each
        block = torch.zeros(24, 24)
        block[:6, :6] = 1 / 36
        torch.testing.assert_close(results["rgae"].r_q2i[0].reshape(24, 24), block)


def test_jacobian_relevance_sees_what_the_receptive_field_leaves_out():
    """C-Abstractor's SE gates read a global mean: its gradient map reaches patches outside the fixed field."""
    model, tokenizer, processor, _ = tiny("cabstractor", 16, "projector.relevance=jacobian", "projector.layer_num=1")
    inp = build_input(tokenizer, processor, render_scene(1000, 3).image, "A pot of green plants")
    r_q2i = explain_all(model.eval(), inp, ["rgae"], tokenizer)["rgae"].r_q2i
    field = model.projector.receptive_field()
    torch.testing.assert_close(r_q2i.sum(1), torch.ones(16))
    assert float(r_q2i[field == 0].sum()) > 0  # mass outside the receptive field
    assert float(r_q2i[field > 0].sum()) > float(r_q2i[field == 0].sum())  # most of it inside


@pytest.mark.parametrize("projector", ["dabstractor", "ldpv2"])
def test_relevance_through_the_vision_tower(projector):
    """vision_relevance=gae carries each zoo R_q2i on to the input patches (R_q2i @ R_f2i)."""
    model, tokenizer, processor, _ = tiny(projector)
    inp = build_input(tokenizer, processor, render_scene(1000, 3).image, "A pot of green plants")
    rel = explain_all(model.eval(), inp, ["rgae"], tokenizer, vision_relevance="gae")["rgae"]
    assert rel.vision_relevance == "gae" and rel.r_q2i.shape == (16, 576) and float(rel.r_q2i.sum()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("projector", ZOO)
def test_train_then_explain_cli(projector, tmp_path):
    """`python -m deco.train projector=<each>` (3 steps), `python -m deco.explain` on its checkpoint, and the
    checkpoint exported as a deco save_pretrained directory that loads back with the same projector weights."""
    from conftest import TINY_RUN

    from deco.explain.__main__ import run
    from deco.export import export
    from deco.models.loading import load_model
    from deco.train import train

    train(compose_config("train", [*TINY_RUN, f"projector={projector}", "query_num=16"], tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    image = tmp_path / "scene.png"
    render_scene(1000, 3).image.save(image)
    cfg = compose_config("explain", [f"ckpt={ckpt}", f"image={image}", "text=A pot of green plants",
                                     "method=[rgae,rawattn]", "device=cpu", "progress=false"], tmp_path / "out")
    records = run(cfg)["records"]
    assert [r["method"] for r in records] == ["rgae", "rawattn"]
    for kind in ("R_t2i", "R_t2q", "R_q2i"):
        assert len(list((tmp_path / "out").glob(f"{kind}-rgae-*-{projector}*_16.png"))) == 1
    trained = load_model(ckpt).model.projector.state_dict()
    exported = load_model(export(str(ckpt), str(tmp_path / "exported"), "deco")).model.projector.state_dict()
    assert sorted(exported) == sorted(trained)
    assert all(torch.equal(exported[k], trained[k]) for k in trained)
