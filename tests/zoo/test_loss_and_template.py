"""Recipe pieces: per-sample loss averaging and the question-first template."""

import math

import pytest
import torch

from deco.data.conversation import build_prompt, tokenize_conversation, tokenize_prompt
from deco.data.tokenizer import IMAGE_TOKEN, load_tokenizer
from deco.models.loss import next_token_loss


def _logits_for(probs_of_label: list[list[float]], vocab: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax gives each label position the stated probability (labels = token 1)."""
    b, t = len(probs_of_label), max(len(p) for p in probs_of_label) + 1
    logits = torch.full((b, t, vocab), -1e4)
    labels = torch.full((b, t), -100)
    for i, ps in enumerate(probs_of_label):
        for j, p in enumerate(ps):
            logits[i, j, 1] = math.log(p)
            logits[i, j, 2] = math.log(1 - p)
            labels[i, j + 1] = 1
    return logits, labels


def test_token_and_sample_reductions_match_hand_values():
    logits, labels = _logits_for([[0.5], [0.25, 0.25, 0.25]])
    nll = [-math.log(0.5), -math.log(0.25)]
    token = (nll[0] + 3 * nll[1]) / 4
    sample = (nll[0] + nll[1]) / 2
    assert next_token_loss(logits, labels, "token").item() == pytest.approx(token, rel=1e-5)
    assert next_token_loss(logits, labels, "sample").item() == pytest.approx(sample, rel=1e-5)


def test_sample_reduction_ignores_rows_without_answer_and_unknown_names_fail():
    logits, labels = _logits_for([[0.5], [0.5]])
    labels[1] = -100
    assert next_token_loss(logits, labels, "sample").item() == pytest.approx(-math.log(0.5), rel=1e-5)
    with pytest.raises(ValueError, match="choose one of: token, sample"):
        next_token_loss(logits, labels, "mean")


def test_question_first_template_puts_the_image_after_the_question():
    tok = load_tokenizer(None)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    conv = [{"from": "human", "value": f"{IMAGE_TOKEN}\nWhat colour is the circle?"}, {"from": "gpt", "value": "Red."}]
    first = tokenize_conversation(conv, tok, "vicuna_v1")
    qfirst = tokenize_conversation(conv, tok, "vicuna_v1_qfirst")
    text = tok.decode(qfirst["input_ids"])
    assert text.index("What colour is the circle?") < text.index(IMAGE_TOKEN) < text.index("ASSISTANT:")
    assert "USER: What colour is the circle?\n<image> ASSISTANT: Red.</s>" in text
    # same tokens, other order; the answer (labels) identical
    assert sorted(first["input_ids"].tolist()) == sorted(qfirst["input_ids"].tolist())
    assert first["labels"][first["labels"] != -100].tolist() == qfirst["labels"][qfirst["labels"] != -100].tolist()
    # the generation prompt is the conversation's prefix, as a string and as ids
    prompt = tokenize_prompt("What colour is the circle?", tok, "vicuna_v1_qfirst")
    assert qfirst["input_ids"][: len(prompt)].tolist() == prompt.tolist()
    assert prompt.tolist().count(image_id) == 1
    assert build_prompt("What colour is the circle?", "vicuna_v1_qfirst").endswith("circle?\n<image> ASSISTANT:")
