"""The shuffled-grid zoo (issue 24): every scene's cells in a new random order, each with its own content and
position code, so the sequence order carries no layout; the collate, the evaluation tokens and a smoke
regeneration of `--config-name zoo_shuffled`."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from deco.data.tokenizer import load_tokenizer
from deco.zoo import resolve
from deco.zoo.manifest import verify
from deco.zoo.scenes import SymbolicScenes, collate, shuffle_cells
from deco.zoo.symbolic import NUM_CLASSES, SymbolicScene, coverage_grid, label_mask
from deco.zoo.train_llm import symbolic_tokens

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shuffle_cells_moves_content_index_and_validity_together_in_a_new_order_per_row():
    cov = torch.rand(3, 16, NUM_CLASSES)
    cells = torch.arange(16).expand(3, 16)
    valid = torch.arange(16).expand(3, 16) < 12  # the last four are padding
    out_cov, out_cells, out_valid = shuffle_cells(cov, cells, valid, torch.Generator().manual_seed(0))
    for row in range(3):
        assert sorted(out_cells[row].tolist()) == list(range(16))  # a permutation
        assert torch.equal(out_cov[row], cov[row, out_cells[row]])  # each cell keeps its content
        assert out_valid[row].tolist() == (out_cells[row] < 12).tolist()  # and its validity
    assert out_cells[0].tolist() != list(range(16))
    assert out_cells[0].tolist() != out_cells[1].tolist()  # one order per scene, not one for all


def test_shuffled_dataset_collates_dense_grids_in_random_order_with_their_own_cells():
    tok = load_tokenizer(resolve("zoo:tiny/tokenizer"))
    data = SymbolicScenes(4, 0, tok, ["grounding"], [8], 2, "vicuna_v1_qfirst", scene="shuffled")
    items = [data[0], data[1]]
    batch = collate(items, tok.pad_token_id)
    assert batch["grid"] == 8 and bool(batch["cell_valid"].all())
    for row, item in enumerate(items):
        cells = batch["cells"][row]
        assert sorted(cells.tolist()) == list(range(64)) and cells.tolist() != list(range(64))
        exact = torch.from_numpy(coverage_grid(label_mask(item["scene"]), 8))
        assert torch.equal(batch["coverage"][row], exact[cells])
    # the raster zoo's collate of the same items keeps raster order
    raster = collate([{**it, "shuffle": False} for it in items], tok.pad_token_id)
    assert raster["cells"][0].tolist() == list(range(64))


def test_shuffled_evaluation_tokens_are_the_raster_tokens_reordered():
    sym = SymbolicScene(16, content_std=1.0, position_std=1.0)
    data = SymbolicScenes(2, 0, load_tokenizer(resolve("zoo:tiny/tokenizer")), ["caption"], [8], 2, "plain")
    scenes = [data[0]["scene"], data[1]["scene"]]
    raster = symbolic_tokens(sym, 8)(scenes)
    shuffled = symbolic_tokens(sym, 8, shuffle=True)(scenes)
    assert shuffled.shape == raster.shape == (2, 64, 16)
    assert not torch.allclose(shuffled, raster)
    for row in range(2):  # the same 64 vectors: each shuffled token equals exactly one raster token
        match = torch.cdist(shuffled[row], raster[row]).argmin(1)
        assert sorted(match.tolist()) == list(range(64))
        assert torch.allclose(shuffled[row], raster[row, match], atol=1e-6)


def _zoo(tmp_path, out, *overrides):
    proc = subprocess.run([sys.executable, "-m", "deco.zoo", "--config-name", "zoo_shuffled", "smoke=true",
                           f"out_dir={out}", "threads=1", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "manifest.json").read_text())


def test_stage_world_names_the_scenes_it_reads():
    from deco.zoo.__main__ import llm_stages

    stages = llm_stages({"steps": 10, "stages": [{"steps": 5}, {"scene": "shuffled", "world": 1}]}, seed=7)
    assert [s["seed"] for s in stages] == [7, 8, 8]  # stage 2 reads stage 1's scenes again


def test_smoke_shuffled_zoo_goes_from_text_to_grids_and_resumes_at_a_grid_stage(tmp_path):
    """zoo_shuffled's schedule: text-scene stages 0-2, then shuffled grids; the embedder made at stage 0 is saved
    once a grid stage has run, and a run resumed at stage 3 from the text stages' LLM trains the same weights."""
    full = _zoo(tmp_path, tmp_path / "full")
    llm = full["config"]["llm"]
    assert llm["scene"] == "text" and [s.get("scene") for s in llm["stages"]] == [None, None, "shuffled", "shuffled"]
    assert llm["grids"] == [8, 12] and llm["eval_seed"] == 1000
    assert (tmp_path / "full" / "symbolic" / "model.safetensors").is_file() and verify(tmp_path / "full") == []
    assert [(r["stage"], r["step"]) for r in full["metrics"]["llm"]] == [(k, 3 * (k + 1)) for k in range(5)]
    out = tmp_path / "resumed"
    text_stages = OmegaConf.to_container(OmegaConf.load(CONFIGS / "zoo_shuffled.yaml"))["llm"]["stages"][:2]
    as_override = ", ".join("{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in st.items()) + "}" for st in text_stages)
    _zoo(tmp_path, out, f"llm.stages=[{as_override}]")
    assert not (out / "symbolic").exists()  # after text stages alone: no embedder
    again = _zoo(tmp_path, out, "parts=[llm]", "llm.from_stage=3")
    assert [r["step"] for r in again["metrics"]["llm"]] == [3, 6, 9, 12, 15] and verify(out) == []
    for part in ("llm/model.safetensors", "symbolic/model.safetensors"):
        assert again["files"][part] == full["files"][part], part


def test_order_control_shows_zoo_v3s_order_prior_and_needs_a_grid_reading_zoo(tmp_path):
    import pytest

    from deco.zoo import ZOO_ROOT
    from experiments.zoo.order_control import order_control

    raster_zoo = order_control(ZOO_ROOT / "tiny", num=20)  # zoo v3: read "where" from avgpool-64's raster order
    assert raster_zoo["raster"]["grounding"] >= raster_zoo["shuffled"]["grounding"] + 25  # measured 60 vs 15
    assert {t: raster_zoo["shuffled"][t] for t in ("existence", "attribute")} == {"existence": 100.0, "attribute": 100.0}
    with pytest.raises(FileNotFoundError, match="no symbolic/model.safetensors"):
        order_control(tmp_path)
