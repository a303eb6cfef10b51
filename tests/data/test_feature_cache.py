"""The tower-feature cache: hits and misses, invalidation, LRU eviction, corrupt entries, concurrent lanes,
and the data pipeline that serves features from it (the same loss as running the tower in the model)."""

import multiprocessing as mp
import os

import pytest
import torch

from deco.data.collate import Collator
from deco.data.feature_cache import FeatureCache, _HEADER
from deco.data.image import build_image_processor
from deco.data.shapes import ShapesDataset
from deco.data.tokenizer import build_tiny_tokenizer
from deco.data.tower_features import TowerFeatures, preprocessing, tower_fingerprint
from deco.models.vision import VisionTower

NS = {"tower": "t1", "preprocessing": "p1"}
VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 28, "patch_size": 14}  # 2x2 patch grid


def entry(seed: int, shape=(4, 3)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_round_trip_hits_and_misses(tmp_path):
    cache = FeatureCache(tmp_path, NS, max_bytes=2**20)
    assert cache.get("a") is None and cache.stats.misses == 1 and cache.stats.hits == 0
    x = entry(0)
    cache.put("a", x)
    got = cache.get("a")
    assert torch.equal(got, x) and got.dtype == torch.float32
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)
    # header 32 bytes + 2 dims x 8 bytes + 12 float32
    assert cache.stats.bytes_written == cache.stats.bytes_read == _HEADER.size + 16 + 48
    # a second cache object on the same directory and namespace (another lane / run) sees it
    other = FeatureCache(tmp_path, dict(NS), max_bytes=2**20)
    assert torch.equal(other.get("a"), x) and "a" in other and "b" not in other
    # half-precision storage: the values rounded as .to() rounds them, in their own namespace
    half = FeatureCache(tmp_path, NS, max_bytes=2**20, dtype=torch.float16)
    assert half.dir != cache.dir and half.get("a") is None
    half.put("a", x)
    assert torch.equal(half.get("a"), x.half())
    bf = FeatureCache(tmp_path, NS, max_bytes=2**20, dtype=torch.bfloat16)
    bf.put("a", x)
    assert torch.equal(bf.get("a"), x.bfloat16())


def test_namespace_changes_with_tower_weights_and_preprocessing(tmp_path):
    torch.manual_seed(0)
    tower = VisionTower(config=VISION)
    fp = tower_fingerprint(tower)
    twin = VisionTower(config=VISION)
    twin.load_state_dict(tower.state_dict())
    assert tower_fingerprint(twin) == fp  # same weights, same fingerprint
    proc = build_image_processor(image_size=28)
    base = FeatureCache(tmp_path, {"tower": fp, "preprocessing": preprocessing(proc, "pad")}, 2**20)
    base.put("shapes:seed=0:size=28:index=0", entry(1))
    with torch.no_grad():
        getattr(tower.model, "vision_model", tower.model).encoder.layers[0].mlp.fc1.weight[0, 0] += 1e-3
    changed = FeatureCache(tmp_path, {"tower": tower_fingerprint(tower), "preprocessing": preprocessing(proc, "pad")},
                           2**20)
    assert changed.dir != base.dir and changed.get("shapes:seed=0:size=28:index=0") is None
    deeper = VisionTower(config=VISION, select_layer=-1)
    deeper.load_state_dict(tower.state_dict())
    assert tower_fingerprint(deeper) != tower_fingerprint(tower)  # same weights, another layer
    for other_proc, aspect in ((proc, "crop"), (build_image_processor(image_size=28, image_mean=(0.5, 0.5, 0.5)), "pad")):
        ns = {"tower": fp, "preprocessing": preprocessing(other_proc, aspect)}
        assert FeatureCache(tmp_path, ns, 2**20).get("shapes:seed=0:size=28:index=0") is None
    assert base.get("shapes:seed=0:size=28:index=0") is not None  # the old namespace is untouched


def test_eviction_deletes_least_recently_used_down_to_90_percent(tmp_path):
    size = _HEADER.size + 16 + 48  # one (4, 3) float32 entry
    cache = FeatureCache(tmp_path, NS, max_bytes=4 * size)  # room for 4; each put re-counts (bound / 20 < size)
    for k in range(4):
        cache.put(str(k), entry(k))
        os.utime(cache.path(str(k)), ns=(10**9 * (k + 1),) * 2)  # ages: 0 oldest
    assert cache.stats.evicted == 0 and cache.total_bytes() == 4 * size
    cache.get("0")  # a hit makes 0 the most recently used
    cache.put("4", entry(4))  # 5 entries > bound: delete oldest until <= 3.6 entries: 1 and 2 go
    assert cache.stats.evicted == 2
    assert [str(k) in cache for k in range(5)] == [True, False, False, True, True]
    assert cache.total_bytes() == 3 * size
    # the bound covers every namespace: an old entry of another namespace goes first
    other = FeatureCache(tmp_path, {"tower": "t2"}, max_bytes=4 * size)
    os.utime(cache.path("3"), ns=(1, 1))
    other.put("x", entry(9))
    other.put("y", entry(10))  # 5 entries again: the oldest (3, then 0) are deleted
    assert "3" not in cache and "0" not in cache and "4" in cache and "x" in other and "y" in other
    with pytest.raises(ValueError, match="max_gb must be positive"):
        FeatureCache(tmp_path, NS, max_bytes=0)


@pytest.mark.parametrize("damage", ["payload", "truncate", "magic", "empty"])
def test_corrupt_entry_is_a_miss_and_is_deleted(tmp_path, damage):
    cache = FeatureCache(tmp_path, NS, max_bytes=2**20)
    cache.put("a", entry(0))
    path = cache.path("a")
    data = bytearray(path.read_bytes())
    if damage == "payload":
        data[-1] ^= 0xFF
    elif damage == "truncate":
        data = data[:-4]
    elif damage == "magic":
        data[0:8] = b"NOTDECO!"
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert cache.get("a") is None
    assert (cache.stats.corrupt, cache.stats.misses, cache.stats.hits) == (1, 1, 0) and not path.exists()
    cache.put("a", entry(0))  # the caller recomputes and rewrites it
    assert torch.equal(cache.get("a"), entry(0))


def _lane(root, lane, rounds, out):
    cache = FeatureCache(root, NS, max_bytes=2**30)
    bad = 0
    for r in range(rounds):
        for k in range(8):
            got = cache.get(str(k))
            if got is not None and not torch.equal(got, entry(k, (64, 32))):
                bad += 1
            cache.put(str(k), entry(k, (64, 32)))  # both lanes rewrite the same entries all the time
    out.put((lane, bad, cache.stats.corrupt))


def test_concurrent_lanes_never_see_a_torn_entry(tmp_path):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    lanes = [ctx.Process(target=_lane, args=(tmp_path, lane, 40, out)) for lane in range(2)]
    for p in lanes:
        p.start()
    results = [out.get(timeout=120) for _ in lanes]
    for p in lanes:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(results) == [(0, 0, 0), (1, 0, 0)]  # no wrong value, no corrupt read
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tower = VisionTower(config=VISION).requires_grad_(False)
    return tower, build_tiny_tokenizer(), build_image_processor(image_size=28)


def _dataset(tok, proc, n=6):
    return ShapesDataset(n, 5, tokenizer=tok, image_processor=proc, template="vicuna_v1", image_size=28)


def test_pipeline_serves_the_towers_features_from_the_cache(tmp_path, parts):
    tower, tok, proc = parts
    plain = _dataset(tok, proc)
    collate = Collator(tok.pad_token_id)
    reference = collate([plain[i] for i in range(6)])
    with torch.no_grad():
        want = tower(reference["pixel_values"])  # 6 4 16

    first = TowerFeatures(tower, proc, "pad", cache_dir=tmp_path)
    data, coll = first.wrap(plain), first.collator(collate)
    batch = coll([data[i] for i in range(6)])
    assert batch["pixel_values"] is None and batch["tower_cache_hits"] == 0
    assert torch.allclose(batch["vision_features"], want, atol=1e-6)
    assert torch.equal(batch["input_ids"], reference["input_ids"]) and batch["index"] == list(range(6))
    assert first.cache.stats.writes == 6

    second = TowerFeatures(tower, proc, "pad", cache_dir=tmp_path)  # the next run of the study
    data2 = second.wrap(_dataset(tok, proc))
    items = [data2[i] for i in range(6)]
    assert all("pixel_values" not in it and "vision_features" in it for it in items)  # no preprocessing on a hit
    batch2 = second.collator(collate)(items)
    assert batch2["tower_cache_hits"] == 6 and second.cache.stats.hits == 6
    assert torch.equal(batch2["vision_features"], batch["vision_features"])

    third = TowerFeatures(tower, proc, "crop", cache_dir=tmp_path)  # other preprocessing: all misses
    assert third.collator(collate)([third.wrap(plain)[i] for i in range(2)])["tower_cache_hits"] == 0
    with pytest.raises(ValueError, match="needs a frozen vision tower"):
        TowerFeatures(VisionTower(config=VISION), proc, "pad")


def test_training_loss_is_the_same_from_cached_features(tmp_path, parts):
    from deco.lit.module import MLLMModule
    from deco.models.build import build_mllm

    _tower, tok, proc = parts
    torch.manual_seed(0)
    model = build_mllm({"vision": {"config": VISION}, "llm": {"config": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 256}}}, {"name": "avgpool", "query_num": 1}, tok)
    module = MLLMModule(model, {"train_vision": False, "train_llm": True, "loss_reduction": "sample"})
    collate = Collator(tok.pad_token_id)
    plain = _dataset(tok, proc, 4)
    features = TowerFeatures(model.vision, proc, "pad", cache_dir=tmp_path)
    for _ in range(2):  # a miss (tower in the collator) then a hit (from disk)
        batch = features.collator(collate)([features.wrap(plain)[i] for i in range(4)])
        assert torch.allclose(module(batch), module(collate([plain[i] for i in range(4)])), atol=1e-6)
    assert batch["tower_cache_hits"] == 4


def test_deco_train_twice_reads_the_first_runs_features(tmp_path):
    """`tower_features.enabled=true` with a cache: the second run of a study trains on the first run's
    features (every image a hit) and reaches the very same losses as the first."""
    import json

    from deco.train import train
    from conftest import TINY_RUN, compose_config

    cache = tmp_path / "cache"
    losses = []
    for run in ("a", "b"):
        cfg = compose_config("train", [*TINY_RUN, "tower_features.enabled=true", f"tower_features.cache_dir={cache}",
                                       "query_num=16"], tmp_path / run)
        train(cfg)
        records = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["train/loss"] for r in records if "train/loss" in r])
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], abs=1e-6)
    entries = list(cache.rglob("*.feat"))
    assert len(entries) == 12 + 8  # data.train (12 samples) and data.val (8) of TINY_RUN, each written once
