"""What a resumed run reports: skip counts, CSV rows and warnings as an uninterrupted run; files readable by others."""

from __future__ import annotations

import csv
import json
import os
import warnings

import pytest
import torch

from conftest import compose_config, write_llava_corpus
from deco.train import train
from deco.utils.io import atomic_write_bytes


def _corpus(root):
    records = write_llava_corpus(root, n_images=6)
    (root / "img" / "0.jpg").write_bytes(b"not a jpeg" * 20)  # two samples that fail when loaded
    (root / "img" / "3.jpg").write_bytes((root / "img" / "1.jpg").read_bytes()[:200])
    # 8 records + 6 more copies: 12 for training (3 batches of 4), 2 for validation.
    extra = [{**r, "id": f"{r['id']}-b"} for r in records[1:7]]
    (root / "data.json").write_text(json.dumps(records + extra))
    return root / "data.json"


def _run(corpus):
    return ["data=llava_json", f"data.json_path={corpus}", "data.val_size=2", "data.train.num_samples=null",
            "data.batch_size=4", "data.eval_batch_size=2", "data.num_workers=0", "data.max_length=128",
            "query_num=16", "model=tiny_scratch", "model.vision.config.image_size=56",
            "model.image_processor.image_size=56",
            "stage=pretrain", "trainer.max_steps=6", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
            "logger=csv"]


def _losses(run_dir) -> list[tuple[int, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_resumed_run_reports_what_an_uninterrupted_one_does(tmp_path):
    corpus = _corpus(tmp_path / "data")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(compose_config("train", _run(corpus), straight))
    with pytest.raises(SystemExit):
        train(compose_config("train", [*_run(corpus), "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection",
                                       "+callbacks.inject.signal_at_step=4"], killed))  # in epoch 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_config("train", _run(corpus), killed))
    assert not [w for w in caught if "not resumable" in str(w.message)]
    a = json.loads((killed / "data_skips.json").read_text())
    b = json.loads((straight / "data_skips.json").read_text())
    assert a == b and b["train"]["corrupt_image"] == 3  # 0.jpg, 3.jpg and the copy of record 3
    assert _losses(killed) == _losses(straight)  # rows from before the interruption kept, none twice
    assert [s for s, _ in _losses(straight)] == list(range(6))
    assert torch.equal(*(torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["model.projector.mlp_projector.0.weight"]
                         for d in (killed, straight)))


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "x.png", b"\x89PNG")
        assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "y.json", b"{}")
        assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
