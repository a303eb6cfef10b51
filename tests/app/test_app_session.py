"""The explorer without a browser: input checks, answers, maps equal deco.explain's, deco and llava-hf models."""

from __future__ import annotations

import pytest
import torch
from app_helpers import deco_ckpt, llava_hf_dir
from conftest import compose_config

from deco.app import session
from deco.app.__main__ import load_slots, validate
from deco.app.session import AppInputError, Slot
from deco.app.ui import ask, build_ui
from deco.data.shapes import render_scene
from deco.explain.inputs import build_input
from deco.explain.methods import explain
from deco.models.loading import load_model


@pytest.fixture(scope="module")
def slots():
    return [Slot.of(load_model(deco_ckpt()), "deco"), Slot.of(load_model(llava_hf_dir()), "hf")]


def _wide_image(tmp_path):
    path = tmp_path / "wide.jpg"
    render_scene(1000, 3).image.resize((300, 120)).save(path)  # any aspect: padded as trained
    return path


def test_unreadable_image_and_long_text_get_clear_messages(tmp_path, slots):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(AppInputError, match="Could not read 'notes.png' as an image"):
        session.read_image(bad)
    with pytest.raises(AppInputError, match="Upload an image first"):
        session.read_image(None)
    tok = slots[0].loaded.tokenizer
    with pytest.raises(AppInputError, match=r"The question is \d+ tokens long; the limit is 4"):
        session.check_text("what colour is the big red circle here", tok, 4, "question")
    assert session.check_text("  hi ", tok, 4, "question") == "hi"
    message, results = ask(slots, str(bad), "What is it?", "", "rgae", "none", 8, 64)
    assert "Could not read" in message and results == [(None, ""), (None, "")]
    message, results = ask(slots, str(_wide_image(tmp_path)), "word " * 80, "", "rgae", "none", 8, 64)
    assert "The question is" in message and all(view is None for view, _ in results)


def test_maps_are_deco_explains_own(tmp_path, slots):
    slot = slots[0]
    image = session.read_image(_wide_image(tmp_path))
    view = session.explain_text(slot, image, "What shape is green?", "green triangle", "rgae", "gae")
    loaded = slot.loaded
    inp = build_input(
        loaded.tokenizer,
        loaded.image_processor,
        image,
        "green triangle",
        "What shape is green?",
        slot.template,
        slot.image_aspect,
    )
    ref = explain(loaded.model, inp, "rgae", loaded.tokenizer, per_token=True, vision_relevance="gae")
    torch.testing.assert_close(view.rel.r_t2i, ref.r_t2i)
    torch.testing.assert_close(view.rel.r_t2i_tokens, ref.r_t2i_tokens)
    assert [label for label, _ in session.token_choices(view)] == [
        f"{k}: {t.strip()}" for k, t in enumerate(ref.target_tokens)
    ]
    order = [j for _, j in session.query_choices(view)]
    assert sorted(order) == list(range(16)) and float(ref.r_t2q[order[0]]) == float(ref.r_t2q.max())
    assert session.t2i_picture(view).size == (336, 366) and session.q2i_picture(view, order[0]).size == (336, 366)
    first, last = session.t2i_picture(view, 0), session.t2i_picture(view, len(ref.target_tokens) - 1)
    assert len(ref.target_tokens) == 2 and first.tobytes() != last.tobytes()  # per-word maps differ


def test_ask_answers_and_explains_every_model(tmp_path, slots):
    message, results = ask(slots, str(_wide_image(tmp_path)), "What shape is green?", "", "rgae", "gae", 6, 64)
    assert message.startswith("Image 300x120; 2 model(s)")
    (deco_view, deco_info), (hf_view, hf_info) = results
    for view, slot in ((deco_view, slots[0]), (hf_view, slots[1])):
        assert view is not None and view.answer == session.answer(
            slot, session.read_image(_wide_image(tmp_path)), "What shape is green?", 6
        )
        assert view.rel.vision_relevance == "gae"
    assert deco_view.rel.r_t2i.shape == (24, 24) and hf_view.rel.r_t2i.shape == (4, 4)
    assert "rgae, generated answer" in deco_info
    message, results = ask(slots, str(_wide_image(tmp_path)), "What?", "A green triangle", "ig", "none", 6, 64)
    assert all(view.answer == "A green triangle" and view.rel.method == "ig" for view, _ in results)
    assert "teacher-forced text" in results[0][1]
    message, results = ask(slots, str(_wide_image(tmp_path)), "What?", "A green triangle", "attnlrp", "none", 6, 64)
    assert all(view.rel.method == "attnlrp" and float(view.rel.r_t2q.abs().sum()) > 0 for view, _ in results)


def test_config_checks_embedded_default_and_page(tmp_path):
    for override, message in (
        ("method=lrp", "method=lrp is unknown"),
        ("port=0", "not a TCP port"),
        ("vision_relevance=x", "vision_relevance=x is unknown"),
        ("ckpt=/no/such.ckpt", "no such file"),
    ):
        with pytest.raises(SystemExit, match=message):
            validate(compose_config("app", [override], tmp_path))
    cfg = compose_config("app", ["query_num=16", "device=cpu"], tmp_path)
    assert cfg.host == "127.0.0.1" and cfg.share is False
    (slot,) = load_slots(cfg)
    assert slot.name == "avgpool2_16 (embedded default)" and slot.loaded.model.num_visual_tokens == 16
    demo = build_ui([slot, slot])
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"image-input", "ask", "m0-t2i", "m1-word", "m1-query", "m1-q2i"} <= ids
