"""No code runs because a checkpoint asks for it (issue 29, item 1).

The crafted run dir below is what an attacker can ship without any pickle: a `last.ckpt` whose stored
tokenizer settings say `trust_remote_code: true`, and a `tokenizer/` whose config maps AutoTokenizer to a
`.py` file next to it. That file writes a marker when imported. Every entry point that loads a checkpoint
(evaluate, explain, export, app, lmms-eval adapter) must refuse it without running the file; only the
user's own `trust_remote_code=True` runs it, with a warning.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from deco.zoo import resolve

EVIL = """import os, pathlib
pathlib.Path(os.environ["DECO_TEST_MARKER"]).write_text("code from the run dir ran")
from transformers import PreTrainedTokenizerFast
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture(scope="module")
def crafted_ckpt(tmp_path_factory):
    from deco.data.tokenizer import build_tiny_tokenizer
    from deco.models.build import build_mllm

    run = tmp_path_factory.mktemp("crafted_run")
    cfg = compose_config("train", ["model=tiny_scratch", "query_num=16"], run)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    model_cfg, projector_cfg = resolved["model"], resolved["projector"]
    torch.manual_seed(0)
    model = build_mllm(model_cfg, projector_cfg, build_tiny_tokenizer())
    model_cfg["tokenizer"] = {"name_or_path": None, "model_max_length": 1024, "trust_remote_code": True}
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": {"build": {"model": model_cfg, "projector": projector_cfg},
                                     "stage": {"template": "vicuna_v1"}},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    tok_dir = run / "tokenizer"
    shutil.copytree(resolve("zoo:tiny/tokenizer"), tok_dir)
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer",
                  auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer"] * 2})
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (tok_dir / "tokenization_evil.py").write_text(EVIL)
    return ckpt


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "PWNED"
    monkeypatch.setenv("DECO_TEST_MARKER", str(path))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    return path


def _refused(call, marker):
    with pytest.raises((ValueError, SystemExit)) as err:
        call()
    assert not marker.exists(), "the checkpoint's tokenizer code ran"
    assert "trust_remote_code" in str(err.value)


def test_evaluate_refuses_code_from_the_checkpoint(crafted_ckpt, marker, tmp_path):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", [f"ckpt={crafted_ckpt}", "benchmark.num_samples=2", "benchmark.image_size=56",
                                      "logger=none", "device=cpu", "progress=false"], tmp_path / "eval")
    _refused(lambda: evaluate(cfg), marker)


def test_explain_refuses_code_from_the_checkpoint(crafted_ckpt, marker, tmp_path):
    from PIL import Image

    from deco.explain.__main__ import run

    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(image)
    cfg = compose_config("explain", [f"ckpt={crafted_ckpt}", f"image={image}", "text=red", "device=cpu",
                                     "progress=false"], tmp_path / "explain")
    _refused(lambda: run(cfg), marker)


def test_export_refuses_code_from_the_checkpoint(crafted_ckpt, marker, tmp_path):
    from deco.export import run

    cfg = compose_config("export", [f"ckpt={crafted_ckpt}", f"out_dir={tmp_path / 'exported'}"], tmp_path / "export")
    _refused(lambda: run(cfg), marker)


def test_app_refuses_code_from_the_checkpoint(crafted_ckpt, marker, tmp_path):
    from deco.app.__main__ import load_slots

    cfg = compose_config("app", [f"ckpt={crafted_ckpt}", "device=cpu"], tmp_path / "app")
    _refused(lambda: load_slots(cfg), marker)


def test_lmms_adapter_refuses_code_from_the_checkpoint(crafted_ckpt, marker):
    pytest.importorskip("lmms_eval", reason="lmms-eval is not installed")
    from deco.integrations.lmms_eval import DecoLMM

    _refused(lambda: DecoLMM(ckpt=str(crafted_ckpt), device="cpu"), marker)


def test_only_the_users_own_flag_runs_it_with_a_warning(crafted_ckpt, marker, caplog):
    from deco.models.loading import load_model
    from deco.utils import remote_code

    with caplog.at_level(logging.WARNING):
        loaded = load_model(crafted_ckpt, trust_remote_code=True)
    assert marker.read_text() == "code from the run dir ran"
    assert type(loaded.tokenizer).__name__ == "EvilTokenizer"
    assert any("may run Python code" in r.getMessage() for r in caplog.records)
    assert any("ignoring stored trust_remote_code=True" in r.getMessage() for r in caplog.records)
    assert remote_code.current() is False  # the consent ends with the load
