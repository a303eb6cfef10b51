"""One name per concept across config groups (issue 28; docs/design.md, "Names"), old spellings still working.

`mlp_depth` counts the Linear layers of a projector's MLP in every projector config (before, avgpool, maxpool,
pixelshuffle, ldp, ldpv2 and tokenpacker called it `layer_num`, the name the others use for their main stack);
how to load a checkpoint is `load.*` in every job (evaluate / explain / export had `model.*`); the folder a job
writes to is `out_dir` (export / to_wds had `out`, explain and two callbacks `output_dir`, three jobs `result_dir`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_config
from omegaconf import OmegaConf
from torch import nn

from deco.models.projectors import PROJECTORS, build_projector
from deco.models.projectors.base import stored_projector_config
from deco.utils.renamed import rename_overrides, rename_projector_keys

ROOT = Path(__file__).resolve().parents[1]
PROJECTOR_FILES = sorted((ROOT / "configs" / "projector").glob("*.yaml"))
STACKED = {"qformer", "resampler", "cabstractor", "dabstractor"}  # a main stack of layers besides any MLP
SMALL = {"dabstractor": {"num_attention_heads": 2, "num_points": 2}}


def small(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    query = {} if name in ("linear", "mlp2x_gelu") else {"query_num": 9}
    return build_projector(name, in_dim=8, out_dim=12, num_patches=36, **query, **{**SMALL.get(name, {}), **kwargs})


def linears(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


def shipped(path: Path) -> dict:
    return {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in ("defaults", "permute_tokens")}


@pytest.mark.parametrize("path", PROJECTOR_FILES, ids=[p.stem for p in PROJECTOR_FILES])
def test_every_projector_config_calls_its_mlp_depth_mlp_depth(path):
    """In every configs/projector/*.yaml the MLP's Linear layers are `mlp_depth` (one more layer: one more
    Linear), and `layer_num` is only the main stack of the projectors that have one."""
    cfg = shipped(path)
    name = cfg["name"]
    assert ("layer_num" in cfg) == (name in STACKED), f"{path.name}: layer_num is the main stack's name only"
    if "mlp_depth" in cfg:
        assert linears(small(name, mlp_depth=3)) - linears(small(name, mlp_depth=1)) == 2, path.name


def test_the_projectors_without_a_stack_take_mlp_depth_and_their_old_layer_num():
    mlp_only = {"avgpool", "maxpool", "mlp2x_gelu", "pixelshuffle", "ldp", "ldpv2", "tokenpacker"}
    assert {n for n, cls in PROJECTORS.items() if cls.renamed_keys} == mlp_only
    for name in mlp_only:  # a stored config or a Python caller with the old key builds the same projector
        old, new = small(name, layer_num=3), small(name, mlp_depth=3)
        assert linears(old) == linears(new) and old.mlp_depth == 3
        assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]
    assert stored_projector_config({"name": "avgpool", "layer_num": 3, "query_num": 64}) == {
        "name": "avgpool",
        "mlp_depth": 3,
        "query_num": 64,
    }
    assert stored_projector_config({"name": "qformer", "layer_num": 3}) == {"name": "qformer", "layer_num": 3}


def test_old_command_line_spellings_are_said_and_passed_on_under_the_new_name(tmp_path):
    argv, said = rename_overrides("export", ["ckpt=a", "out=b", "model.base=c", "+model.vision_tower=d"])
    assert argv == ["ckpt=a", "out_dir=b", "load.base=c", "+load.vision_tower=d"]
    assert said[0] == "`out` is now `out_dir` (docs/design.md, Names); using out_dir=b"
    assert [s.split("`")[3] for s in said] == ["out_dir", "load.base", "load.vision_tower"]
    cfg = compose_config("export", argv[:3], tmp_path)
    assert (cfg.out_dir, cfg.load.base) == ("b", "c")
    assert rename_overrides("explain", ["output_dir=x", "model.merge_lora=false"])[0] == [
        "out_dir=x",
        "load.merge_lora=false",
    ]
    assert rename_overrides("evaluate", ["model.merge_lora=false"])[0] == ["load.merge_lora=false"]
    assert rename_overrides("to_wds", ["out=s"])[0] == ["out_dir=s"]
    assert rename_overrides("train", ["callbacks.relevance.output_dir=r"])[0] == ["callbacks.relevance.out_dir=r"]
    assert rename_overrides("train", ["model=tiny", "out=x"]) == (["model=tiny", "out=x"], [])  # train has no out


@pytest.mark.parametrize(
    "projector,key", [("avgpool", "mlp_depth"), ("pixelshuffle", "mlp_depth"), ("qformer", "layer_num")]
)
def test_projector_layer_num_on_the_command_line_lands_where_the_projector_has_it(tmp_path, projector, key):
    argv, said = rename_overrides("train", [f"projector={projector}", "projector.layer_num=3"])
    assert argv == [f"projector={projector}", "++projector.layer_num=3"] and said == []
    cfg = compose_config("train", argv, tmp_path)
    messages = rename_projector_keys(cfg)
    assert cfg.projector[key] == 3 and (key == "layer_num") == ("layer_num" in cfg.projector)
    if key == "mlp_depth":
        assert messages == [
            f"projector.layer_num is now projector.mlp_depth for projector={projector} (the Linear "
            "layers of its MLP; docs/design.md, Names); using projector.mlp_depth=3"
        ]
    else:
        assert messages == []


def test_an_old_spelling_is_said_when_the_command_runs():
    """The rewrite happens at `import deco` in `python -m deco.<job>` (here with --help: no torch, ~1 s)."""
    result = subprocess.run(
        [sys.executable, "-m", "deco.export", "ckpt=a", "out=b", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "deco: `out` is now `out_dir` (docs/design.md, Names); using out_dir=b" in result.stderr


def test_a_checkpoint_saved_with_layer_num_loads_as_mlp_depth(tmp_path):
    """A .ckpt of an MLP-only projector saved before the rename (build.projector.layer_num) loads: same depth."""
    from deco.data.tokenizer import build_tiny_tokenizer
    from deco.models.build import build_mllm
    from deco.models.loading import load_model

    cfg = OmegaConf.to_container(
        compose_config("train", ["model=tiny_scratch", "query_num=16"], tmp_path), resolve=True
    )
    model_cfg, projector_cfg = cfg["model"], {**cfg["projector"], "mlp_depth": 3}
    torch.manual_seed(0)
    model = build_mllm(model_cfg, projector_cfg, build_tiny_tokenizer())
    old = {("layer_num" if k == "mlp_depth" else k): v for k, v in projector_cfg.items()}
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    torch.save(
        {
            "hyper_parameters": {"build": {"model": model_cfg, "projector": old}, "stage": {"template": "plain"}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        ckpt,
    )
    loaded = load_model(ckpt)  # strict state-dict load: the 3-layer MLP was built
    assert loaded.config["projector"]["mlp_depth"] == 3 and "layer_num" not in loaded.config["projector"]
    assert loaded.model.projector.mlp_depth == 3 and loaded.projector_tag == "avgpool3_16"
