"""The shuffled-grid zoo (issue 24): every scene's cells in a new random order, each with its own content and
position code, so the sequence order carries no layout; the collate, the evaluation tokens and a smoke
regeneration of `--config-name zoo_shuffled`."""

import json
import subprocess
import sys

import torch

from deco.data.tokenizer import load_tokenizer
from deco.zoo import resolve
from deco.zoo.manifest import verify
from deco.zoo.scenes import SymbolicScenes, collate, shuffle_cells
from deco.zoo.symbolic import NUM_CLASSES, SymbolicScene, coverage_grid, label_mask
from deco.zoo.train_llm import symbolic_tokens


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


def test_smoke_shuffled_zoo_keeps_its_embedder_and_scores_on_the_validation_world(tmp_path):
    out = tmp_path / "zoo"
    proc = subprocess.run([sys.executable, "-m", "deco.zoo", "--config-name", "zoo_shuffled", "smoke=true",
                           f"out_dir={out}", "threads=1", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "manifest.json").read_text())
    llm = meta["config"]["llm"]
    assert llm["scene"] == "shuffled" and llm["grids"] == [8, 12] and llm["eval_seed"] == 1000
    assert (out / "symbolic" / "model.safetensors").is_file() and verify(out) == []
    assert [r["step"] for r in meta["metrics"]["llm"]] == [3, 6]  # the two LLM stages
