"""The llava_json file read in a forked reader while the run starts (deco.data.llava_prefetch), and the run's start
with the garbage collector paused (deco.utils.startup)."""

import gc
import json
import os
import pickle
import subprocess
import sys

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from deco.data import llava_prefetch, llava_records
from deco.data.image import build_image_processor
from deco.data.llava_json import LlavaJsonDataset
from deco.data.skips import SkipSample
from deco.data.tokenizer import build_tiny_tokenizer
from deco.utils.startup import paused_gc


def _write(tmp_path):
    """10 good records and one of each kind that the read drops."""
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "img.png")
    good = [
        {
            "id": f"r{k}",
            "image": "img.png",
            "conversations": [{"from": "human", "value": f"<image>\nq{k} ünï"}, {"from": "gpt", "value": f"a{k}"}],
        }
        for k in range(10)
    ]
    bad = [
        {"id": "gone", "image": "missing.png", "conversations": good[0]["conversations"]},
        {"id": "escape", "image": "../x.png", "conversations": good[0]["conversations"]},
        {"id": "empty", "conversations": []},
        12345678901234567890,
    ]
    records = good[:3] + bad[:2] + good[3:6] + bad[2:] + good[6:]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def _config(path, **data):
    data = {"background_read": True, **data}
    train = {
        "_target_": llava_prefetch.LLAVA_DATASET,
        "_partial_": True,
        "json_path": str(path),
        "image_root": None,
        "split": "train",
        "check_images": True,
        "allow_absolute_paths": False,
    }
    return OmegaConf.create({"train": train, **data})


def _skips(records):
    return [(type(e).__name__, str(e), r, p) for e, r, p in records.skips]


def test_the_reader_gives_what_the_dataset_reads_itself(tmp_path, caplog):
    path = _write(tmp_path)
    llava_records.clear_cache()
    tok, proc = build_tiny_tokenizer(), build_image_processor(image_size=28)
    own = LlavaJsonDataset(str(path), split="train", val_size=2, tokenizer=tok, image_processor=proc)._records
    llava_records.clear_cache()
    with caplog.at_level("INFO", logger="deco.data.llava_prefetch"), llava_prefetch.prefetching(_config(path)) as key:
        pid, out_dir = llava_prefetch._PENDING[key]
        assert os.path.isdir(out_dir)
        train = LlavaJsonDataset(str(path), split="train", val_size=2, tokenizer=tok, image_processor=proc)
        val = LlavaJsonDataset(str(path), split="val", val_size=2, tokenizer=tok, image_processor=proc)
        assert key not in llava_prefetch._PENDING and not os.path.exists(out_dir)  # taken and cleaned up
    got = train._records
    assert got is val._records and "took the background read" in caplog.text
    assert bytes(got.blob) == bytes(own.blob) and isinstance(got.blob, bytearray)
    assert np.array_equal(got.offsets, own.offsets) and np.array_equal(got.positions, own.positions)
    assert _skips(got) == _skips(own)
    assert [e.reason for e, _, _ in got.skips] == [
        "missing_image",
        "unsafe_path",
        "empty_conversation",
        "malformed_json",
    ]
    assert got.skips[-1][1:] == (12345678901234567890, 9)  # the element as json decodes it, its position
    assert train.skips.counts()["missing_image"] == 1 and (len(train), len(val)) == (8, 2)
    assert train[0]["id"] == "r0" and val.record(1)["id"] == "r9"


def test_a_failed_reader_leaves_the_error_to_the_dataset(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"not": "an array"}')
    llava_records.clear_cache()
    with llava_prefetch.prefetching(_config(path)) as key:
        assert key is not None
        try:
            LlavaJsonDataset(str(path), tokenizer=build_tiny_tokenizer(), image_processor=build_image_processor())
        except ValueError as error:
            assert "must hold a JSON array of records, got dict" in str(error) and "data.json" in str(error)
        else:
            raise AssertionError("no error")
    assert not llava_prefetch._PENDING


def test_a_read_under_another_key_is_not_taken_and_is_cleaned_up(tmp_path):
    path = _write(tmp_path)
    llava_records.clear_cache()
    with llava_prefetch.prefetching(_config(path)) as key:
        pid, out_dir = llava_prefetch._PENDING[key]
        # check_images=false: other options, another key; the dataset reads the file itself
        ds = LlavaJsonDataset(
            str(path), check_images=False, tokenizer=build_tiny_tokenizer(), image_processor=build_image_processor()
        )
        assert len(ds) == 11 and key in llava_prefetch._PENDING  # 11: the missing image is not checked
    assert not llava_prefetch._PENDING and not os.path.exists(out_dir)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the reader still runs")


def test_read_settings_follow_the_dataset_rules(tmp_path):
    path = _write(tmp_path)
    assert llava_prefetch.read_settings(_config(path)) == (path, (False, str(tmp_path)))
    cfg = _config(path)
    cfg.train.image_root, cfg.train.allow_absolute_paths = str(tmp_path / "imgs"), True
    assert llava_prefetch.read_settings(cfg) == (path, (True, str(tmp_path / "imgs")))
    cfg.train.check_images = False
    assert llava_prefetch.read_settings(cfg) == (path, (True, None))
    assert llava_prefetch.start(_config(path, background_read=False)) is None
    assert llava_prefetch.read_settings(_config(tmp_path / "none.json")) is None
    other = OmegaConf.create({"train": {"_target_": "deco.data.shapes.ShapesDataset"}})
    assert llava_prefetch.read_settings(other) is None and llava_prefetch.start(other) is None
    assert llava_prefetch.start(OmegaConf.create({"train": {"_target_": llava_prefetch.LLAVA_DATASET}})) is None


def test_background_read_auto_wants_a_free_core():
    assert llava_prefetch.wanted(True, cores=2, load=9.0) and not llava_prefetch.wanted(False, cores=64, load=0.0)
    assert llava_prefetch.wanted("auto", cores=2, load=0.9) and llava_prefetch.wanted("auto", cores=2, load=1.0)
    assert not llava_prefetch.wanted("auto", cores=2, load=1.1) and not llava_prefetch.wanted("auto", cores=1, load=0.0)
    assert llava_prefetch.wanted("auto", cores=16, load=7.0)
    assert not llava_prefetch.wanted("yes", cores=16, load=0.0)  # refused by name in validate_train_config


def test_skip_sample_pickles_with_its_reason_and_detail():
    back = pickle.loads(pickle.dumps(SkipSample("missing_image", "no file 'x.png'")))
    assert (back.reason, back.detail, str(back)) == (
        "missing_image",
        "no file 'x.png'",
        "missing_image: no file 'x.png'",
    )


def test_paused_gc_freezes_on_request_and_restores_the_collector():
    assert gc.isenabled()
    with paused_gc() as freeze:
        assert not gc.isenabled() and gc.get_freeze_count() == 0
        freeze()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with paused_gc():
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc() as freeze:
            freeze()
            assert not gc.isenabled()  # a collector that was off stays off
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_importing_deco_train_imports_neither_torch_nor_lightning():
    code = (
        "import sys, deco.train; print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
