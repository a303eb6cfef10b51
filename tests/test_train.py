"""`deco.train` end to end on the tiny default: files written, stages honoured, sweeps run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deco.train import train

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("projector", ["avgpool", "qformer", "linear"])
def test_train_leaves_checkpoint_metrics_and_config(train_config, tmp_path, projector):
    cfg = train_config(f"projector={projector}", "query_num=16")
    val_loss = train(cfg)

    assert val_loss is not None and torch.isfinite(torch.tensor(val_loss))
    for name in ("last.ckpt", "best.ckpt"):
        assert (tmp_path / "checkpoints" / name).is_file()
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["projector"]["name"] == projector
    assert len(json.loads((tmp_path / "run_info.json").read_text())["config_hash"]) == 12
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train_records = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3]
    assert all(r["train/tokens_per_s"] > 0 for r in train_records)
    assert any("val/loss" in r for r in records)

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["hyper_parameters"]["build"]["projector"]["name"] == projector
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def _fit_and_diff(cfg) -> tuple[set[str], set[str]]:
    """Train via deco.train and report which parameters changed vs. the same-seed initial model."""
    from deco.data.tokenizer import load_tokenizer
    from deco.models.stages import apply_stage
    from deco.models.build import build_mllm
    import lightning as L
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    L.seed_everything(cfg.seed, workers=True)
    initial = build_mllm(resolved["model"], resolved["projector"], load_tokenizer(**resolved["model"]["tokenizer"]))
    apply_stage(initial, resolved["stage"])  # LoRA adds adapter weights (B = 0) before training
    before = _weights(initial)
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    after = {k.removeprefix("model."): v for k, v in state.items()}
    assert before.keys() == after.keys()
    return _changed(before, after), set(before)


def test_pretrain_changes_only_the_projector(train_config):
    changed, _ = _fit_and_diff(train_config("stage=pretrain", "projector=avgpool", "query_num=16"))
    assert changed and all(k.startswith("projector.") for k in changed)


def test_finetune_changes_projector_and_llm_but_not_vision(train_config):
    changed, _ = _fit_and_diff(train_config("stage=finetune", "projector=avgpool", "query_num=16"))
    assert any(k.startswith("projector.") for k in changed)
    assert any(k.startswith("llm.") for k in changed)
    assert not any(k.startswith("vision.") for k in changed)


def test_lora_finetune_changes_only_adapters_and_projector(train_config):
    changed, names = _fit_and_diff(train_config("stage=finetune_lora", "projector=avgpool", "query_num=16"))
    assert any("lora_" in k for k in changed) and any(k.startswith("projector.") for k in changed)
    assert all(k.startswith("projector.") or "lora_" in k for k in changed)
    assert any("lora_" in k for k in names)


def test_init_from_loads_previous_stage_weights(train_config, tmp_path):
    pretrain = train_config("stage=pretrain", "query_num=16")
    train(pretrain)
    last = tmp_path / "checkpoints" / "last.ckpt"
    pretrained = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]

    from deco.data.tokenizer import load_tokenizer
    from deco.models.build import build_mllm
    from deco.lit.init_from import load_model_weights
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(pretrain, resolve=True)
    model = build_mllm(resolved["model"], resolved["projector"], load_tokenizer(**resolved["model"]["tokenizer"]))
    load_model_weights(model, str(last))
    for key, value in model.state_dict().items():
        assert torch.equal(value, pretrained[f"model.{key}"])


def test_cli_rejects_bad_config_before_building(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "deco.train", "query_num=150", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Config error: query_num=150 is not a perfect square" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_multirun_sweep_runs_one_dir_per_job(tmp_path):
    """The README's sweep command, shrunk: 2 jobs with Hydra's basic launcher."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deco.train",
            "-m",
            "projector=linear,avgpool",
            "query_num=16",
            "data.train.num_samples=16",
            "data.val.num_samples=8",
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.max_steps=2",
            "logger=none",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    job_dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert job_dirs == ["0-linear-q16", "1-avgpool-q16"]
    for job in job_dirs:
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
        assert yaml.safe_load((tmp_path / job / "config.yaml").read_text())["projector"]["name"] in job
