"""A corpus with every kind of broken sample: exact skip counts per reason, and training still runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from deco.data.collate import Collator
from deco.data.llava_json import LlavaJsonDataset
from deco.data.shapes import make_sample
from deco.data.to_wds import convert
from deco.data.wds import WdsDataset
from deco.data.wds_loader import WdsLoader

GOOD = [f"good-{i}" for i in range(9)] + ["text-only"]
# Found while reading the file (check_images=True) ...
AT_READ = {"malformed_json": 1, "empty_conversation": 1, "missing_image": 1}
# ... and when the sample is loaded.
AT_LOAD = {"corrupt_image": 2, "too_long": 1, "bad_conversation": 1}
MAX_LENGTH = 128


def write_bad_corpus(root: Path) -> Path:
    """data.jsonl with 10 good records (the last two good) and 7 broken ones of 6 kinds."""
    img = root / "img"
    img.mkdir(parents=True)
    lines = []

    def qa(i):
        meta = make_sample(1, i, image_size=48)[2]
        return [{"from": "human", "value": f"<image>\n{meta['question']}"}, {"from": "gpt", "value": meta["answer"]}]

    for i in range(9):
        make_sample(1, i, image_size=48)[0].image.save(img / f"{i}.jpg")
    full = (img / "0.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (img / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    good = [json.dumps({"id": f"good-{i}", "image": f"img/{i}.jpg", "conversations": qa(i)}) for i in range(9)]
    bad = [
        '{"id": "broken", "conversations": [',  # malformed JSON line
        json.dumps({"id": "empty", "conversations": []}),
        json.dumps({"id": "missing", "image": "img/nope.jpg", "conversations": qa(0)}),
        json.dumps({"id": "truncated", "image": "img/truncated.jpg", "conversations": qa(1)}),
        json.dumps({"id": "garbage", "image": "img/garbage.jpg", "conversations": qa(2)}),
        json.dumps({"id": "long", "image": "img/3.jpg", "conversations": [
            qa(3)[0], {"from": "gpt", "value": "A small red circle. " * 40}]}),
        json.dumps({"id": "roles", "conversations": [
            {"from": "human", "value": "What colour is the circle?"}, {"from": "human", "value": "Red."}]}),
    ]
    text = json.dumps({"id": "text-only", "conversations": [
        {"from": "human", "value": "What colour is the circle?"}, {"from": "gpt", "value": "Red."}]})
    # Interleave; the last two lines are good (the val split in the training test).
    lines = [good[0], bad[0], good[1], bad[1], text, bad[2], good[2], bad[3], good[3], bad[4], bad[5], good[4],
             bad[6], good[8], good[5], good[6], good[7]]
    path = root / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_bad_corpus(tmp_path_factory.mktemp("bad_corpus"))


def kwargs(tok, proc):
    return dict(tokenizer=tok, image_processor=proc, template="vicuna_v1", max_length=MAX_LENGTH, image_aspect="pad")


def nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


def test_json_loader_counts_every_reason_exactly_across_workers(corpus, tok, proc):
    ds = LlavaJsonDataset(str(corpus), **kwargs(tok, proc))
    assert nonzero(ds.skips.counts()) == AT_READ  # counted before any worker starts
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, collate_fn=Collator(tok.pad_token_id),
                        persistent_workers=True)
    for epoch in range(2):  # a bad sample read again in a later epoch is not counted twice
        seen = [i for batch in loader for i in batch["id"]]
        assert len(seen) == len(ds) == 14  # bad ones replaced by good neighbours: batches keep their size
        assert set(seen) == set(GOOD)
        assert nonzero(ds.skips.counts()) == {**AT_READ, **AT_LOAD}


def test_shards_leave_out_broken_samples_and_loader_counts_the_rest(corpus, tok, proc, tmp_path):
    index = convert(input=str(corpus), out_dir=str(tmp_path / "wds"), shard_size=4, progress=False)
    # to_wds checks records and decodes every image; token-level problems need the tokenizer.
    assert index["skipped"] == {"malformed_json": 1, "empty_conversation": 1, "missing_image": 1,
                                "corrupt_image": 2}
    assert index["num_samples"] == 12
    per_rank = []
    for rank in range(2):
        ds = WdsDataset(str(tmp_path / "wds"), rank=rank, world_size=2, shuffle_buffer=4, uneven="pad",
                        **kwargs(tok, proc))
        loader = WdsLoader(ds, batch_size=2, num_workers=2, collate_fn=Collator(tok.pad_token_id))
        ids = [i for batch in loader for i in batch["id"]]
        per_rank.append((ids, ds.skips.counts()))
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == 6  # 12 / 2: equal steps per rank despite skips
    total = Counter()
    for _, counts in per_rank:
        total.update(counts)
    assert nonzero(total) == {"too_long": 1, "bad_conversation": 1}
    assert set(per_rank[0][0] + per_rank[1][0]) <= set(GOOD)


def test_truncated_shard_is_counted_not_fatal(tmp_path, tok, proc):
    convert(input="shapes", num_samples=8, image_size=32, out_dir=str(tmp_path), shard_size=4, progress=False)
    shard = tmp_path / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    ds = WdsDataset(str(tmp_path), shuffle=False, **kwargs(tok, proc))
    ids = [s["id"] for s in ds]
    delivered = len({i for i in ids if int(i.rsplit("-", 1)[1]) >= 4})
    assert len(ids) == 8  # the lost samples are replaced by repeats of good ones
    assert ds.skips.counts()["corrupt_shard"] == 4 - delivered >= 1


def test_good_samples_train_and_the_run_reports_skips(corpus, train_config, tmp_path):
    """12 training records (3 batches of 4: the training order drops no partial batch), 2 for val."""
    from deco.train import train

    cfg = train_config(
        "data=llava_json", f"data.json_path={corpus}", "data.val_size=2", "data.num_workers=0",
        "data.train.num_samples=null",
        f"data.max_length={MAX_LENGTH}", "query_num=16",
        "model=tiny_scratch", "model.vision.config.image_size=56", "model.image_processor.image_size=56",  # 4 x 4 patches: fast
        "++callbacks.data_report._target_=deco.lit.data_report.DataReport",
        f"++callbacks.data_report.path={tmp_path / 'data_skips.json'}",
    )
    val_loss = train(cfg)
    assert val_loss is not None and torch.isfinite(torch.tensor(val_loss))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    report = json.loads((tmp_path / "data_skips.json").read_text())
    assert nonzero(report["train"]) == {**AT_READ, **AT_LOAD}
    assert nonzero(report["val"]) == {}
