"""LLaVA-format JSON datasets: tokens and labels as the core templates, images as LLaVA 'pad', clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_llava_corpus
from PIL import Image

from deco.data.collate import Collator
from deco.data.conversation import tokenize_conversation
from deco.data.image import process_image
from deco.data.llava_json import LlavaJsonDataset, check_record
from deco.data.shapes import make_sample
from deco.data.skips import SkipSample
from deco.data.tokenizer import IGNORE_INDEX

IMAGE_SIZE = 28


def make(path, tok, proc, template="vicuna_v1", **kw):
    return LlavaJsonDataset(str(path), tokenizer=tok, image_processor=proc, template=template,
                            max_length=kw.pop("max_length", 256), image_aspect=kw.pop("image_aspect", "pad"), **kw)


def test_samples_match_core_tokenization_and_pad_preprocessing(tmp_path, tok, proc):
    records = write_llava_corpus(tmp_path)
    ds = make(tmp_path / "data.json", tok, proc)
    assert len(ds) == len(records)
    for i, record in enumerate(records):
        sample = ds[i]
        assert sample["id"] == record["id"]
        want = tokenize_conversation(record["conversations"], tok, "vicuna_v1", 256)
        assert torch.equal(sample["input_ids"], want["input_ids"])
        assert torch.equal(sample["labels"], want["labels"])
        if "image" in record:
            img = Image.open(tmp_path / record["image"])
            assert torch.equal(sample["pixel_values"], process_image(img, proc, "pad"))
            assert sample["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
            assert int((sample["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum()) == 1
        else:
            assert sample["pixel_values"] is None


def test_image_placeholder_anywhere_in_first_turn_moves_to_front(tmp_path, tok, proc):
    write_llava_corpus(tmp_path)
    ds = make(tmp_path / "data.json", tok, proc)
    # Record 5 has "Q <image> please": LLaVA removes the placeholder (leaving "Q  please", two spaces,
    # as its preprocess_multimodal does) and puts "<image>\n" in front.
    q = make_sample(0, 5, image_size=64)[2]["question"]
    front = [{"from": "human", "value": f"<image>\n{q}  please"},
             {"from": "gpt", "value": make_sample(0, 5, image_size=64)[2]["answer"]}]
    assert torch.equal(ds[5]["input_ids"], tokenize_conversation(front, tok, "vicuna_v1")["input_ids"])
    # The image token follows "USER: " directly (LLaVA's "<image>\n" + question).
    ids = ds[4]["input_ids"].tolist()
    k = ids.index(tok.convert_tokens_to_ids("<image>"))
    assert tok.decode(ids[k - 3: k]).endswith("USER: ") and tok.decode(ids[k + 1: k + 2]).startswith("\n")


def test_multi_turn_labels_cover_answers_and_eos_only(tmp_path, tok, proc):
    write_llava_corpus(tmp_path)
    ds = make(tmp_path / "data.json", tok, proc)
    sample = ds[7]  # text-1: two rounds, no image
    labels = sample["labels"]
    trained = labels[labels != IGNORE_INDEX]
    assert tok.decode(trained) == " Circle.</s> Yes.</s>"
    assert (sample["input_ids"][labels != IGNORE_INDEX] == trained).all()
    assert labels[0] == IGNORE_INDEX


def test_text_only_batch_gets_zero_images_next_to_real_ones(tmp_path, tok, proc):
    write_llava_corpus(tmp_path)
    ds = make(tmp_path / "data.json", tok, proc)
    batch = Collator(tok.pad_token_id)([ds[0], ds[6]])
    assert batch["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(batch["pixel_values"][1], torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE))
    assert batch["id"] == ["img-0", "text-0"]


def test_resize_aspect_and_plain_template(tmp_path, tok, proc):
    records = write_llava_corpus(tmp_path)
    ds = make(tmp_path / "data.json", tok, proc, image_aspect="resize", template="plain")
    img = Image.open(tmp_path / "img" / "2.jpg")
    assert torch.equal(ds[2]["pixel_values"], process_image(img, proc, "resize"))
    # plain: BOS, <image>, caption + "\n" trained.
    labels = ds[0]["labels"]
    assert tok.decode(labels[labels != IGNORE_INDEX]) == records[0]["conversations"][1]["value"] + "\n"
    # Text-only records cannot be plain-template samples: skipped and replaced by the next good one
    # (6 -> 7 -> wraps to 0); both bad records are counted, each once however often it is read.
    assert ds[6]["id"] == "img-0" and ds.skips.counts()["bad_conversation"] == 2
    assert ds[7]["id"] == "img-0" and ds[6]["id"] == "img-0" and ds.skips.counts()["bad_conversation"] == 2


def test_jsonl_splits_and_num_samples(tmp_path, tok, proc):
    records = write_llava_corpus(tmp_path)
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train = make(path, tok, proc, split="train", val_size=3)
    val = make(path, tok, proc, split="val", val_size=3)
    assert [train.record(i)["id"] for i in range(len(train))] == [r["id"] for r in records[:5]]
    assert [val.record(i)["id"] for i in range(len(val))] == [r["id"] for r in records[5:]]
    assert len(make(path, tok, proc, num_samples=2)) == 2


def test_clear_errors_before_training(tmp_path, tok, proc):
    write_llava_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        make(tmp_path / "nope.json", tok, proc)
    with pytest.raises(FileNotFoundError, match="image_root"):
        make(tmp_path / "data.json", tok, proc, image_root=str(tmp_path / "missing"))
    (tmp_path / "obj.json").write_text('{"id": 1}')
    with pytest.raises(ValueError, match="JSON array"):
        make(tmp_path / "obj.json", tok, proc)
    (tmp_path / "broken.json").write_text('[{"id": 1')
    with pytest.raises(ValueError, match="not valid JSON"):
        make(tmp_path / "broken.json", tok, proc)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no usable samples"):
        make(tmp_path / "empty.jsonl", tok, proc)
    with pytest.raises(ValueError, match="val_size=8"):
        make(tmp_path / "data.json", tok, proc, split="train", val_size=8)
    with pytest.raises(ValueError, match="unknown conversation template"):
        make(tmp_path / "data.json", tok, proc, template="chatml")
    with pytest.raises(ValueError, match="image_aspect"):
        make(tmp_path / "data.json", tok, proc, image_aspect="square")


@pytest.mark.parametrize(
    "record, reason",
    [
        ([1, 2], "malformed_json"),
        ({"id": 1}, "malformed_json"),
        ({"conversations": []}, "empty_conversation"),
        ({"conversations": [{"from": "human", "value": " "}, {"from": "gpt", "value": ""}]}, "empty_conversation"),
        ({"conversations": [{"from": "human"}]}, "bad_conversation"),
        ({"image": "a.jpg", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
         "bad_conversation"),
        ({"conversations": [{"from": "human", "value": "<image> Q"}, {"from": "gpt", "value": "A"}]},
         "bad_conversation"),
        ({"image": "a.jpg", "conversations": [{"from": "human", "value": "<image> Q"},
                                              {"from": "gpt", "value": "<image>"}]}, "bad_conversation"),
    ],
)
def test_check_record_reasons(record, reason):
    with pytest.raises(SkipSample) as info:
        check_record(record)
    assert info.value.reason == reason
