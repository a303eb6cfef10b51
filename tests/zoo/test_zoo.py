"""The shipped zoo: intact files, offline loading through model=tiny, and a smoke regeneration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from deco.data.tokenizer import load_tokenizer
from deco.models.build import build_mllm
from deco.zoo import ZOO_ROOT, load_manifest, resolve
from deco.zoo.manifest import sha256, verify

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_zoo_files_match_their_manifest():
    listed = load_manifest("tiny")["files"]
    assert {"vision/model.safetensors", "llm/model.safetensors", "tokenizer/tokenizer.json"} <= set(listed)
    assert verify(ZOO_ROOT / "tiny") == []
    size = sum((ZOO_ROOT / "tiny" / f).stat().st_size for f in listed)
    assert size < 10 * 2**20  # the budget: under 10 MB in all


def test_verify_names_a_changed_file(tmp_path):
    import shutil

    shutil.copytree(ZOO_ROOT / "tiny", tmp_path / "zoo")
    (tmp_path / "zoo" / "tokenizer" / "tokenizer_config.json").write_text("{}")
    assert verify(tmp_path / "zoo") == ["tokenizer/tokenizer_config.json"]


def test_resolve_maps_zoo_names_and_names_what_is_missing():
    assert resolve("zoo:tiny/llm") == str(ZOO_ROOT / "tiny" / "llm")
    assert resolve("openai/clip-vit-large-patch14-336") == "openai/clip-vit-large-patch14-336"
    assert resolve(None) is None
    with pytest.raises(FileNotFoundError, match="zoo:tiny/llm"):
        resolve("zoo:tiny/nothing")
    with pytest.raises(FileNotFoundError):
        resolve("zoo:../../etc")


def test_model_tiny_loads_the_zoo_weights_offline():
    from safetensors.torch import load_file

    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
    tok = load_tokenizer(**cfg["tokenizer"])
    model = build_mllm(cfg, {"name": "avgpool", "query_num": 64, "mlp_depth": 2, "pooling": "avg"}, tok)
    llm_weights = load_file(ZOO_ROOT / "tiny" / "llm" / "model.safetensors")
    vision_weights = load_file(ZOO_ROOT / "tiny" / "vision" / "model.safetensors")
    llm_state, vision_state = model.llm.state_dict(), model.vision.model.state_dict()
    assert llm_weights and all(torch.equal(llm_state[k], v) for k, v in llm_weights.items())
    assert vision_weights and all(torch.equal(vision_state[k], v) for k, v in vision_weights.items())
    # the scratch config builds the same architecture with fresh weights
    scratch = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "tiny_scratch.yaml"))
    fresh = build_mllm(scratch, {"name": "avgpool", "query_num": 64, "mlp_depth": 2, "pooling": "avg"}, tok)
    assert fresh.llm.state_dict().keys() == llm_state.keys()
    assert not torch.equal(fresh.llm.state_dict()["model.embed_tokens.weight"], llm_state["model.embed_tokens.weight"])


def test_smoke_regeneration_writes_a_loadable_zoo(tmp_path):
    out = tmp_path / "zoo"
    proc = subprocess.run(
        [sys.executable, "-m", "deco.zoo", "smoke=true", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'run'}",
         "threads=1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"zoo written to {out}" in proc.stdout
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["files"]["llm/model.safetensors"] == sha256(out / "llm" / "model.safetensors")
    assert meta["config"]["smoke"] is True and [r["step"] for r in meta["metrics"]["llm"]] == [3, 6]  # two LLM stages
    assert verify(out) == []
    # the regenerated tokenizer is the shipped one (the zoo fixes it)
    shipped = json.loads((ZOO_ROOT / "tiny" / "tokenizer" / "tokenizer.json").read_text())
    assert json.loads((out / "tokenizer" / "tokenizer.json").read_text())["model"] == shipped["model"]


def test_llm_stages_override_the_base_and_reseed():
    from deco.zoo.__main__ import llm_stages

    stages = llm_stages({"steps": 10, "lr": 1.0, "tasks": ["caption"], "stages": [{"lr": 0.5, "tasks": ["grounding"]}],
                         "from_stage": 0}, seed=7)
    assert stages == [{"steps": 10, "lr": 1.0, "tasks": ["caption"], "seed": 7},
                      {"steps": 10, "lr": 0.5, "tasks": ["grounding"], "seed": 8}]


def test_smoke_llm_stages_run_and_resume(tmp_path):
    def zoo(out, *overrides):
        proc = subprocess.run([sys.executable, "-m", "deco.zoo", "smoke=true", f"out_dir={out}", "threads=1",
                               f"hydra.run.dir={tmp_path / 'run'}", *overrides], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Warning" not in proc.stderr, proc.stderr  # was: float(loss) of a tensor that requires grad (train_llm)
        return json.loads((out / "manifest.json").read_text())

    two_stages = "llm.stages=[{tasks: [grounding]}]"
    full = zoo(tmp_path / "full", two_stages)
    assert [(r["stage"], r["step"]) for r in full["metrics"]["llm"]] == [(0, 3), (1, 6)]
    out = tmp_path / "resumed"  # stage 0 alone, then stage 1 continued from the LLM it left in out_dir
    first = zoo(out, "llm.stages=[]")
    first["metrics"]["llm"][0]["loss"] = -1.0  # a marker: a resumed run copies stage 0's curve, a retrained one would not
    (out / "manifest.json").write_text(json.dumps(first))
    again = zoo(out, "parts=[llm]", "llm.from_stage=1", two_stages)
    assert again["metrics"]["llm"][0]["loss"] == -1.0 and [r["step"] for r in again["metrics"]["llm"]] == [3, 6]
    assert verify(out) == []
    # continuing from the saved stage-0 LLM trains the same weights as both stages in one run
    assert again["files"]["llm/model.safetensors"] == full["files"]["llm/model.safetensors"]
    assert again["files"]["vision/model.safetensors"] == full["files"]["vision/model.safetensors"]  # seeded init
    bad = subprocess.run([sys.executable, "-m", "deco.zoo", "smoke=true", f"out_dir={out}", "parts=[llm]",
                          "llm.from_stage=5", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert bad.returncode != 0 and "llm.from_stage=5: the schedule has stages 0..1" in bad.stderr


@pytest.mark.parametrize("name,scene", [("tiny_text", "text"), ("tiny_shuffled", "shuffled")])
def test_prior_free_zoo_matches_its_manifest_and_loads_offline(name, scene):
    """model=tiny_text / tiny_shuffled: the issue-24 LLMs with the default zoo tower; files as their manifest says."""
    from safetensors.torch import load_file

    from deco.zoo.__main__ import llm_stages

    assert llm_stages(load_manifest(name)["config"]["llm"], seed=0)[-1]["scene"] == scene  # the last stage's
    assert verify(ZOO_ROOT / name) == []
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / f"{name}.yaml"))
    model = build_mllm(
        cfg, {"name": "avgpool", "query_num": 64, "mlp_depth": 2, "pooling": "avg"}, load_tokenizer(**cfg["tokenizer"])
    )
    llm = load_file(ZOO_ROOT / name / "llm" / "model.safetensors")
    state = model.llm.state_dict()
    assert llm and all(torch.equal(state[k], v) for k, v in llm.items())
    symbolic_llm = load_file(ZOO_ROOT / "tiny" / "llm" / "model.safetensors")
    assert not all(torch.equal(symbolic_llm[k], v) for k, v in llm.items())
