"""`tower_features.enabled=auto` (the default): on for a frozen tower trained on CPU, cached under
$DECO_CACHE_DIR (~/.cache/deco without it); tests point that variable to a temporary dir (conftest)."""

import json
import os
from pathlib import Path

import pytest

from conftest import TEST_CACHE_DIR, TINY_RUN, compose_config
from deco.data.tower_features import resolve_enabled
from deco.utils.config import ConfigError, validate_train_config


@pytest.mark.parametrize(
    ("enabled", "train_vision", "accelerator", "cuda", "expected"),
    [
        (True, False, "gpu", True, True),  # as given, wherever it runs
        (False, False, "cpu", False, False),
        ("auto", False, "cpu", True, True),  # CPU training with a frozen tower: on
        ("auto", True, "cpu", False, False),  # the tower trains: nothing to precompute
        ("auto", False, "gpu", True, False),  # an accelerator: the workers' CPU tower would be the slow part
        ("auto", False, "auto", False, True),  # Lightning's auto picks the CPU here
        ("auto", False, "auto", True, False),  # ... and the GPU here
    ],
)
def test_auto_is_on_for_a_frozen_tower_on_cpu_only(enabled, train_vision, accelerator, cuda, expected):
    assert resolve_enabled(enabled, train_vision=train_vision, accelerator=accelerator, cuda_available=cuda) is expected


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_other_values_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="tower_features.enabled=.* is not one of: true, false, auto"):
        resolve_enabled(bad, train_vision=False, accelerator="cpu", cuda_available=False)


def test_default_cache_dir_is_under_deco_cache_dir_else_the_users_cache(tmp_path, monkeypatch):
    cfg = compose_config("train", [], tmp_path)
    assert cfg.tower_features.enabled == "auto"
    assert os.environ["DECO_CACHE_DIR"] == TEST_CACHE_DIR  # conftest: tests never write to the home dir
    assert cfg.tower_features.cache_dir == f"{TEST_CACHE_DIR}/tower_features"
    monkeypatch.delenv("DECO_CACHE_DIR")
    assert compose_config("train", [], tmp_path).tower_features.cache_dir == "~/.cache/deco/tower_features"


def test_config_check_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="tower_features.enabled=maybe is not one of"):
        validate_train_config(compose_config("train", ["tower_features.enabled=maybe"], tmp_path))
    with pytest.raises(ConfigError, match="stage.train_vision=true trains it"):
        validate_train_config(
            compose_config("train", ["tower_features.enabled=true", "stage.train_vision=true"], tmp_path)
        )
    validate_train_config(compose_config("train", ["stage.train_vision=true"], tmp_path))  # auto: simply off


def test_auto_is_off_for_a_gpu_trainer_and_a_trained_tower(tmp_path):
    from deco.train import _tower_features

    for overrides in (["trainer=gpu"], ["stage.train_vision=true"]):
        cfg = compose_config("train", overrides, tmp_path)
        assert _tower_features(cfg, model=None, image_processor=None) is None  # decided before the model is read


def test_a_default_run_caches_its_scenes_under_deco_cache_dir(tmp_path, monkeypatch):
    """The default recipe (no tower_features override) on CPU: every scene's tower output lands in
    $DECO_CACHE_DIR/tower_features, nothing in the home directory."""
    from deco.train import train

    monkeypatch.setenv("DECO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train(compose_config("train", [*TINY_RUN, "query_num=16"], tmp_path / "run"))
    entries = list((tmp_path / "cache" / "tower_features").rglob("*.feat"))
    assert len(entries) == 12 + 8  # data.train (12 samples) and data.val (8) of TINY_RUN
    assert not (tmp_path / "home").exists()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "train/loss" in r]) == 3
    assert Path(TEST_CACHE_DIR).is_dir()
