"""LLaVA JSON read once per process, streamed record by record into a compact blob (deco.data.llava_records)."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from deco.data import llava_records
from deco.data.image import build_image_processor
from deco.data.llava_json import LlavaJsonDataset
from deco.data.tokenizer import build_tiny_tokenizer

TRICKY = [
    {"id": "a", "conversations": [{"from": "human", "value": "<image>\nWhat is ünïcødé? 日本語 \u2603"},
                                  {"from": "gpt", "value": "Snow [1, 2]. \"quoted\" \\ back"}], "image": "x.png"},
    12345678901234567890,  # a number that a window boundary could cut
    [1, [2, {"k": "]"}]],
    "a string, with ] and , inside",
    None, True, 0.5e-3,
    {"id": "b", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x" * 300}]},
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_stream_decodes_every_element_across_window_boundaries(tmp_path, monkeypatch, chunk, indent):
    monkeypatch.setattr(llava_records, "CHUNK", chunk)
    path = tmp_path / "d.json"
    path.write_text("\ufeff" + json.dumps(TRICKY, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")
    got = list(llava_records.iter_json_array(path))
    assert [obj for obj, _ in got] == TRICKY
    assert [json.loads(text) for _, text in got] == TRICKY  # the source text of each element decodes to it
    path.write_text(" [ ] ")
    assert list(llava_records.iter_json_array(path)) == []


@pytest.mark.parametrize("text, message", [
    ('{"a": 1}', "must hold a JSON array of records, got dict"),
    ("[1, 2", "is not valid JSON"),
    ("[1 2]", "is not valid JSON"),
    ('[{"a": }]', "is not valid JSON"),
    ("nonsense", "is not valid JSON"),
])
def test_not_an_array_names_the_file(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(llava_records, "CHUNK", 3)
    llava_records.clear_cache()
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        llava_records.read_records(path, lambda record, pos: None)
    assert "bad.json" in str(info.value)


def _write(tmp_path, n=40):
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "img.png")
    records = []
    for k in range(n):
        conv = [{"from": "human", "value": ("<image>\n" if k % 3 else "") + f"q{k}"}, {"from": "gpt", "value": f"a{k}"}]
        records.append({"id": f"r{k}", "conversations": conv, **({"image": "img.png"} if k % 3 else {})})
    records.insert(5, {"id": "broken", "conversations": []})  # dropped when read, counted once
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path, records


def test_both_splits_share_one_parse_and_keep_the_records(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(llava_records, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(llava_records, "CHUNK", 256)
    llava_records.clear_cache()
    path, records = _write(tmp_path)
    parses = []
    real = llava_records.iter_json_array
    monkeypatch.setattr(llava_records, "iter_json_array", lambda *a, **k: parses.append(1) or real(*a, **k))
    tok, proc = build_tiny_tokenizer(), build_image_processor(image_size=28)
    kwargs = dict(tokenizer=tok, image_processor=proc, val_size=4)
    with caplog.at_level(logging.INFO, logger="deco.data.llava_records"):
        train = LlavaJsonDataset(str(path), split="train", **kwargs)
        val = LlavaJsonDataset(str(path), split="val", **kwargs)
    assert len(parses) == 1 and train._records is val._records
    assert any("reading data.json:" in r.getMessage() and "records" in r.getMessage() for r in caplog.records)
    assert isinstance(train._records.blob, bytearray) and train._records.offsets.dtype == np.int64
    good = [r for r in records if r["id"] != "broken"]
    assert (len(train), len(val)) == (36, 4)
    assert [train.record(i)["id"] for i in range(36)] == [r["id"] for r in good[:36]]
    assert [val.record(i)["id"] for i in range(4)] == [r["id"] for r in good[36:]]
    assert val.record(0)["_pos"] == 37 and train.record(5)["_pos"] == 6  # positions in the file
    assert {k: v for k, v in train.skips.counts().items() if v} == {"empty_conversation": 1}
    assert not val.skips.total()
    assert train[1]["id"] == "r1" and train[1]["pixel_values"].shape == (3, 28, 28)
    # the file changes: read again
    path.write_text(json.dumps(good[:10]))
    assert len(LlavaJsonDataset(str(path), split="all", tokenizer=tok, image_processor=proc)) == 10
    assert len(parses) == 2
