"""Collator: exact padding values, masks, truncation, images and passthrough keys."""

import pytest
import torch

from deco.data.collate import Collator

PAD = 3


def _samples():
    return [
        {"input_ids": torch.tensor([1, 5, 6]), "labels": torch.tensor([-100, 5, 6]),
         "pixel_values": torch.ones(3, 4, 4), "task": "caption", "index": 0},
        {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([-100, 7]),
         "pixel_values": None, "task": "existence", "index": 1},
    ]


def test_right_padding():
    b = Collator(PAD)(_samples())
    assert b["input_ids"].tolist() == [[1, 5, 6], [1, 7, PAD]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert b["pixel_values"].shape == (2, 3, 4, 4)
    assert (b["pixel_values"][0] == 1).all() and (b["pixel_values"][1] == 0).all()  # text-only -> zeros
    assert b["task"] == ["caption", "existence"] and b["index"] == [0, 1]


def test_left_padding_and_truncation():
    b = Collator(PAD, padding_side="left")(_samples())
    assert b["input_ids"].tolist() == [[1, 5, 6], [PAD, 1, 7]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert b["labels"].tolist() == [[-100, 5, 6], [-100, -100, 7]]
    t = Collator(PAD, max_length=2)(_samples())
    assert t["input_ids"].tolist() == [[1, 5], [1, 7]]
    assert t["labels"].tolist() == [[-100, 5], [-100, 7]]


def test_pad_id_inside_sequence_keeps_mask():
    # pad == unk (LLaVA): a real pad-id token inside the text stays attended.
    b = Collator(0)([{"input_ids": torch.tensor([1, 0, 9])}, {"input_ids": torch.tensor([1])}])
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "labels" not in b and b["pixel_values"] is None
    z = Collator(0, image_size=5)([{"input_ids": torch.tensor([1])}])
    assert z["pixel_values"].shape == (1, 3, 5, 5) and (z["pixel_values"] == 0).all()


def test_errors():
    with pytest.raises(ValueError, match="padding_side"):
        Collator(0, padding_side="middle")
    with pytest.raises(ValueError, match="pixel_values of sample 1"):
        Collator(0)([{"input_ids": [1], "pixel_values": torch.zeros(3, 2, 2)},
                     {"input_ids": [1], "pixel_values": torch.zeros(3, 4, 4)}])
    with pytest.raises(ValueError, match="empty"):
        Collator(0)([])
