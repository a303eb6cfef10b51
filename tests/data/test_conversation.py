"""Conversation templates: exact LLaVA-1.5 strings and exact label masks."""

import pytest
import torch

from deco.data.conversation import (
    TEMPLATES,
    SampleTooLong,
    build_prompt,
    tokenize_conversation,
    tokenize_prompt,
)
from deco.data.tokenizer import IGNORE_INDEX

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def _answer_text(tok, out):
    lab = out["labels"]
    return tok.decode(lab[lab != IGNORE_INDEX])


def test_prompt_strings_match_llava():
    assert build_prompt("What colour is the triangle?", "vicuna_v1") == (
        SYSTEM + " USER: <image>\nWhat colour is the triangle? ASSISTANT:"
    )
    assert build_prompt("<image>\nHi", "vicuna_v1", with_image=False) == SYSTEM + " USER: Hi ASSISTANT:"
    assert build_prompt("ignored", "plain") == "<image>"
    assert TEMPLATES["vicuna_v1"].sep == " " and TEMPLATES["vicuna_v1"].sep2 == "</s>"


def test_unknown_template():
    with pytest.raises(ValueError, match="plain"):
        build_prompt("q", "llama_2")


def test_vicuna_one_turn(tok):
    conv = [{"from": "human", "value": "What colour is the triangle?\n<image>"}, {"from": "gpt", "value": "Red."}]
    out = tokenize_conversation(conv, tok, "vicuna_v1")
    ids, lab = out["input_ids"], out["labels"]
    assert ids.dtype == torch.long and ids.shape == lab.shape
    # Full text = LLaVA's get_prompt with <image> moved to the front of the turn.
    full = SYSTEM + " USER: <image>\nWhat colour is the triangle? ASSISTANT: Red.</s>"
    assert tok.decode(ids) == "<s>" + full
    # Built by segments, yet identical to tokenizing the whole string (byte-level BPE).
    assert ids.tolist() == tok.encode(full)
    # Loss only on the answer (its leading space is part of its first token, like "▁Red") and </s>.
    assert _answer_text(tok, out) == " Red.</s>"
    n_train = int((lab != IGNORE_INDEX).sum())
    assert lab[-n_train:].tolist() == ids[-n_train:].tolist()
    assert (lab[:-n_train] == IGNORE_INDEX).all()
    assert (ids == tok.convert_tokens_to_ids("<image>")).sum() == 1
    # The generation prompt is exactly the unlabelled prefix.
    prompt = tokenize_prompt("What colour is the triangle?", tok, "vicuna_v1")
    assert prompt.tolist() == ids[: len(ids) - n_train].tolist()


def test_vicuna_multi_turn(tok):
    conv = [
        {"from": "human", "value": "<image>\nWhat colour is the triangle?"},
        {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Is there a blue square in the image?"},
        {"from": "gpt", "value": "No."},
    ]
    out = tokenize_conversation(conv, tok, "vicuna_v1")
    full = (
        SYSTEM + " USER: <image>\nWhat colour is the triangle? ASSISTANT: Red.</s>"
        "USER: Is there a blue square in the image? ASSISTANT: No.</s>"
    )
    assert out["input_ids"].tolist() == tok.encode(full)
    assert _answer_text(tok, out) == " Red.</s> No.</s>"
    # Two separate labelled spans.
    trained = (out["labels"] != IGNORE_INDEX).int()
    assert int((trained[1:] - trained[:-1] == 1).sum()) == 2


def test_plain_template(tok):
    conv = [{"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "A small red circle."}]
    out = tokenize_conversation(conv, tok, "plain")
    assert tok.decode(out["input_ids"]) == "<s><image>A small red circle.\n"
    assert out["labels"][:2].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    assert _answer_text(tok, out) == "A small red circle.\n"
    assert tokenize_prompt("x", tok, "plain").tolist() == out["input_ids"][:2].tolist()


def test_text_only_and_leading_gpt_skipped(tok):
    conv = [{"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yes."}]
    out = tokenize_conversation(conv, tok, "vicuna_v1")
    assert tok.decode(out["input_ids"]) == "<s>" + SYSTEM + " USER: Hi ASSISTANT: Yes.</s>"
    assert (out["input_ids"] == 4).sum() == 0


def test_too_long_and_bad_input(tok):
    conv = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "Yes."}]
    n = len(tokenize_conversation(conv, tok, "vicuna_v1")["input_ids"])
    assert len(tokenize_conversation(conv, tok, "vicuna_v1", max_length=n)["input_ids"]) == n
    with pytest.raises(SampleTooLong, match=f"max_length={n - 1}"):
        tokenize_conversation(conv, tok, "vicuna_v1", max_length=n - 1)
    assert issubclass(SampleTooLong, ValueError)
    with pytest.raises(ValueError, match="gpt"):
        tokenize_conversation([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], tok, "vicuna_v1")
    with pytest.raises(ValueError, match="alternating"):
        tokenize_conversation([{"from": "human", "value": "a"}], tok, "vicuna_v1")
    with pytest.raises(ValueError, match="one image"):
        tokenize_conversation(conv + conv, tok, "vicuna_v1")
