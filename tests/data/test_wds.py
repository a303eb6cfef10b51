"""Webdataset shards: to_wds round trip, exact rank x worker coverage, deterministic order, resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from conftest import compose_config, write_llava_corpus

from deco.data.collate import Collator
from deco.data.image import build_image_processor
from deco.data.llava_json import LlavaJsonDataset
from deco.data.to_wds import run as to_wds_run
from deco.data.tokenizer import build_tiny_tokenizer
from deco.data.wds import WdsDataset
from deco.data.wds_loader import WdsLoader
from deco.data.wds_index import load_index, plan_epoch

@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory):
    """22 shapes-world samples in shards of 4 (the last one holds 2)."""
    out = tmp_path_factory.mktemp("shapes_wds")
    to_wds_main(["input=shapes", "num_samples=22", "seed=3", "image_size=32", f"out_dir={out}", "shard_size=4",
                 "progress=false"])
    return out


def to_wds_config(*overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config("to_wds", list(overrides), "unused"), resolve=True)


def to_wds_main(overrides):
    """`python -m deco.data.to_wds <overrides>` without the process: compose configs/to_wds.yaml, run."""
    return to_wds_run(to_wds_config(*overrides))


def kwargs(tok, proc):
    return dict(tokenizer=tok, image_processor=proc, template="vicuna_v1", max_length=256, image_aspect="pad")


def test_llava_json_round_trips_through_shards(tmp_path, tok, proc, capsys):
    records = write_llava_corpus(tmp_path / "corpus")
    to_wds_main([f"input={tmp_path / 'corpus' / 'data.json'}", f"out_dir={tmp_path / 'wds'}", "shard_size=3",
                 "progress=false"])
    assert f"wrote {len(records)} samples in 3 shards" in capsys.readouterr().out
    index = json.loads((tmp_path / "wds" / "index.json").read_text())
    assert [s["num_samples"] for s in index["shards"]] == [3, 3, 2] and index["num_samples"] == 8
    direct = LlavaJsonDataset(str(tmp_path / "corpus" / "data.json"), **kwargs(tok, proc))
    shards = {s["id"]: s for s in WdsDataset(str(tmp_path / "wds"), shuffle=False, **kwargs(tok, proc))}
    assert sorted(shards) == sorted(r["id"] for r in records)
    for i in range(len(direct)):
        want = direct[i]
        got = shards[want["id"]]
        assert torch.equal(got["input_ids"], want["input_ids"])
        assert torch.equal(got["labels"], want["labels"])
        if want["pixel_values"] is None:
            assert got["pixel_values"] is None
        else:  # JPEG bytes are copied, not re-encoded: identical pixels
            assert torch.equal(got["pixel_values"], want["pixel_values"])


@pytest.mark.parametrize("uneven", ["drop", "pad"])
def test_plan_covers_every_sample_once(uneven):
    counts = [4, 4, 3, 5, 1, 4]  # N = 21
    for world, workers in [(1, 1), (2, 2), (3, 2), (4, 3)]:
        for epoch in range(3):
            seen: Counter = Counter()
            per_rank = []
            for rank in range(world):
                n = 0
                for worker in range(workers):
                    for shard, start, stop in plan_epoch(counts, epoch=epoch, seed=1, shuffle=True, rank=rank,
                                                         world_size=world, worker=worker, num_workers=workers,
                                                         uneven=uneven):
                        seen.update((shard, k) for k in range(start, stop))
                        n += stop - start
                per_rank.append(n)
            assert len(set(per_rank)) == 1  # equal work per rank: DDP steps stay in lockstep
            left = 21 % world
            if uneven == "drop":
                assert per_rank[0] == 21 // world and max(seen.values()) == 1 and len(seen) == 21 - left
            else:
                assert per_rank[0] == -(-21 // world) and len(seen) == 21
                assert sum(v - 1 for v in seen.values()) == (world - left) % world


def _epoch_ids(path, tok, proc, epoch, world=2, workers=2, seed=0, **kw):
    """ids per rank of one epoch, read through real DataLoader worker processes."""
    out = {}
    for rank in range(world):
        ds = WdsDataset(str(path), rank=rank, world_size=world, seed=seed, shuffle_buffer=5, **kwargs(tok, proc), **kw)
        loader = WdsLoader(ds, epoch=epoch, batch_size=3, num_workers=workers, collate_fn=Collator(tok.pad_token_id))
        out[rank] = [i for batch in loader for i in batch["id"]]
        assert len(loader) == sum(-(-n // 3) for n in (6, 5))  # 11 samples per rank: workers 6 + 5
    return out


def test_two_ranks_two_workers_see_every_sample_once(shapes_shards, tok, proc):
    everything = {f"shapes-3-{i}" for i in range(22)}
    orders = []
    for epoch in (0, 1):
        ids = _epoch_ids(shapes_shards, tok, proc, epoch)
        assert len(ids[0]) == len(ids[1]) == 11
        assert Counter(ids[0] + ids[1]) == Counter(everything)
        orders.append(ids)
    assert orders[0] != orders[1]  # reshuffled each epoch
    assert _epoch_ids(shapes_shards, tok, proc, 1) == orders[1]  # ... deterministically from seed + epoch


def test_resume_mid_epoch_continues_with_unseen_samples(shapes_shards, tok, proc):
    def loader(epoch=0):
        ds = WdsDataset(str(shapes_shards), seed=5, shuffle_buffer=6, **kwargs(tok, proc))
        return WdsLoader(ds, epoch=epoch, lookahead=0, batch_size=2, num_workers=2,
                         collate_fn=Collator(tok.pad_token_id))

    full = [i for batch in loader(epoch=1) for i in batch["id"]]
    first = loader()
    it = iter(first)
    next(it)  # epoch 0 (discarded), then epoch 1: 5 batches trained before the "crash"
    for _ in it:
        pass
    it = iter(first)
    done = [i for _, batch in zip(range(5), it) for i in batch["id"]]
    state = json.loads(json.dumps(first.state_dict()))  # as it would travel through a checkpoint
    assert state["epoch"] == 1 and not state["finished"]
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [i for batch in resumed for i in batch["id"]]
    assert Counter(done + rest) == Counter(full) and len(full) == 22
    # After the resumed epoch, the next one starts normally.
    assert resumed.state_dict()["finished"] and resumed.state_dict()["epoch"] == 1
    assert len([i for batch in resumed for i in batch["id"]]) == 22


def test_length_grouping_sorts_runs_and_keeps_coverage(shapes_shards, tok, proc):
    ds = WdsDataset(str(shapes_shards), group_by_length=8, shuffle_buffer=4, **kwargs(tok, proc))
    samples = list(ds)
    assert sorted(s["id"] for s in samples) == sorted(f"shapes-3-{i}" for i in range(22))
    lengths = [len(s["input_ids"]) for s in samples]
    for start in range(0, 22, 8):  # runs of 8 (the last one 6) sorted by length
        assert lengths[start:start + 8] == sorted(lengths[start:start + 8])
    assert lengths != sorted(lengths)  # ... but not the whole epoch
    # Only a run's last sample marks the run consumed (a resume replays a partly trained run).
    marks = [s["_emitted"] for s in samples]
    assert marks[7] == 8 and set(marks[:7]) == {0} and set(marks[8:15]) == {8} and marks[15] == 16


def test_lookahead_keeps_prefetched_batch_out_of_the_state(shapes_shards, tok, proc):
    ds = WdsDataset(str(shapes_shards), shuffle=False, **kwargs(tok, proc))
    loader = WdsLoader(ds, batch_size=4, num_workers=0, lookahead=1, collate_fn=Collator(tok.pad_token_id))
    it = iter(loader)
    next(it), next(it), next(it)
    assert loader.state_dict()["emitted"] == {0: 8}  # 3 batches fetched, 2 trained on


def test_splits_num_samples_and_index_errors(shapes_shards, tok, proc, tmp_path):
    index = load_index(shapes_shards)
    assert index.counts == (4, 4, 4, 4, 4, 2)
    train = WdsDataset(str(shapes_shards), split="train", val_shards=2, shuffle=False, **kwargs(tok, proc))
    val = WdsDataset(str(shapes_shards), split="val", val_shards=2, shuffle=False, **kwargs(tok, proc))
    assert len(train) == 16 and len(val) == 6
    assert [s["id"] for s in val] == [f"shapes-3-{i}" for i in range(16, 22)]
    capped = WdsDataset(str(shapes_shards), num_samples=6, shuffle=False, **kwargs(tok, proc))
    assert [s["id"] for s in capped] == [f"shapes-3-{i}" for i in range(6)]
    with pytest.raises(FileNotFoundError, match="index_only"):
        WdsDataset(str(tmp_path), **kwargs(tok, proc))
    with pytest.raises(ValueError, match="val_shards=0"):
        WdsDataset(str(shapes_shards), split="train", **kwargs(tok, proc))
    with pytest.raises(ValueError, match="uneven"):
        WdsDataset(str(shapes_shards), uneven="repeat", **kwargs(tok, proc))


def test_index_only_for_foreign_shards_and_arguments(shapes_shards, tmp_path):
    for shard in shapes_shards.glob("*.tar"):
        (tmp_path / shard.name).write_bytes(shard.read_bytes())
    to_wds_main([f"out_dir={tmp_path}", "index_only=true"])
    assert load_index(tmp_path).counts == load_index(shapes_shards).counts
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="shards"):
        to_wds_config("shards=3")
    with pytest.raises(SystemExit, match="shard_size must be int, got 'many'"):
        to_wds_main(["shard_size=many", "out_dir=x"])
    with pytest.raises(SystemExit, match="not empty"):
        to_wds_main(["input=shapes", "num_samples=2", f"out_dir={tmp_path}"])


@pytest.mark.slow
def test_lightning_resume_continues_the_interrupted_epoch(train_config, tmp_path, monkeypatch):
    """deco.train on data=wds: a run checkpointed after step 2 and resumed trains on what the epoch had left."""
    from deco.data.to_wds import convert
    from deco.train import train

    convert(input="shapes", num_samples=40, image_size=56, out_dir=str(tmp_path / "wds"), shard_size=4, progress=False)
    batches: list[list[str]] = []
    plain_iter = WdsLoader.__iter__

    def recording_iter(self):
        for batch in plain_iter(self):
            if self.dataset.shuffle:  # the training loader
                batches.append(list(batch["id"]))
            yield batch

    monkeypatch.setattr(WdsLoader, "__iter__", recording_iter)
    common = ["data=wds", f"data.path={tmp_path / 'wds'}", "data.num_workers=2", "data.batch_size=2",
              "data.train.num_samples=null", "query_num=16", "model=tiny_scratch", "model.vision.config.image_size=56",
              "model.image_processor.image_size=56"]
    # Reference: the training loader's first epoch, read outside Lightning (seed 42 = train.yaml's seed).
    ref_ds = WdsDataset(str(tmp_path / "wds"), split="train", val_shards=1, seed=42, tokenizer=build_tiny_tokenizer(),
                        image_processor=build_image_processor(56))
    ref_loader = WdsLoader(ref_ds, batch_size=2, num_workers=2, collate_fn=Collator(ref_ds.tokenizer.pad_token_id))
    reference = [list(batch["id"]) for batch in ref_loader][:6]
    batches[:] = []
    # Interrupted after 3 steps (last.ckpt written at step 2), then resumed (resume=auto) to step 6.
    run = [*common, "callbacks.last_checkpoint.every_n_train_steps=2", "callbacks.model_checkpoint.save_last=false"]
    train(train_config(*run, "trainer.max_steps=3"))
    assert batches == reference[:3]
    batches[:] = []
    train(train_config(*run, "trainer.max_steps=6"))
    assert batches == reference[2:6]  # continues after the 2 checkpointed steps
