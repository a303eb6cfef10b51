"""The zoo LLM without a layout prior (issue 24): scenes as text in the <image> slot, objects in a seeded random
order; the dataset, the collate mask and a smoke regeneration of `--config-name zoo_text`."""

import json
import random
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from deco.data.shapes import Scene, ShapeObject
from deco.data.tokenizer import load_tokenizer
from deco.models.build import build_mllm
from deco.zoo import resolve
from deco.zoo.manifest import verify
from deco.zoo.scenes import SymbolicScenes, collate
from deco.zoo.text_scene import pad_ids, scene_text

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RED = ShapeObject("square", "red", "medium", (34, 67, 118, 151), 336)  # 0.10 0.20 0.35 0.45
BLUE = ShapeObject("circle", "blue", "small", (175, 202, 225, 252), 336)  # 0.52 0.60 0.67 0.75
RED_TEXT = "a medium red square at [0.10, 0.20, 0.35, 0.45]"
BLUE_TEXT = "a small blue circle at [0.52, 0.60, 0.67, 0.75]"


def test_scene_text_names_every_object_with_its_box_in_a_seeded_order():
    scene = Scene(image=None, objects=[RED, BLUE])
    texts = {scene_text(scene, random.Random(s)) for s in range(20)}
    assert texts == {f"{RED_TEXT}; {BLUE_TEXT}.", f"{BLUE_TEXT}; {RED_TEXT}."}  # both orders occur: no layout
    assert scene_text(scene, random.Random(3)) == scene_text(scene, random.Random(3))
    assert scene.objects == [RED, BLUE]  # the scene itself is not reordered


def test_pad_ids_masks_the_padding():
    ids, valid = pad_ids([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and valid.tolist() == [[True] * 3, [True, False, False]]


def test_text_scenes_carry_the_scene_ids_and_collate_pads_them():
    tok = load_tokenizer(resolve("zoo:tiny/tokenizer"))
    data = SymbolicScenes(4, 0, tok, ["grounding"], [8], 2, "vicuna_v1_qfirst", scene="text")
    items = [data[0], data[1]]
    for i, item in enumerate(items):  # the ids decode to the rendering of that sample's scene
        text = scene_text(item["scene"], random.Random(0 * 15_485_863 + i))
        assert tok.decode(item["scene_ids"]).strip() == text
        assert item["meta"]["answer"] in text  # grounding: the answer box is in the rendering
    batch = collate(items, tok.pad_token_id)
    n = [len(it["scene_ids"]) for it in items]
    assert batch["scene_ids"].shape == (2, max(n)) and batch["scene_valid"].sum(1).tolist() == n


def test_smoke_text_zoo_has_no_embedder_and_matches_its_manifest(tmp_path):
    out = tmp_path / "zoo"
    (out / "symbolic").mkdir(parents=True)  # an embedder left by an earlier symbolic zoo goes away
    (out / "symbolic" / "model.safetensors").write_bytes(b"old")
    proc = subprocess.run([sys.executable, "-m", "deco.zoo", "--config-name", "zoo_text", "smoke=true", f"out_dir={out}",
                           "threads=1", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["config"]["llm"]["scene"] == "text" and meta["config"]["llm"]["sparse_until"] == 0.0
    assert not (out / "symbolic").exists() and "symbolic/model.safetensors" not in meta["files"]
    assert [r["step"] for r in meta["metrics"]["llm"]] == [3, 6, 9] and verify(out) == []  # three LLM stages
    # it loads as model=tiny does, from its own directory, offline, with its LLM's weights
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
    for part in ("vision", "llm", "tokenizer"):
        cfg[part]["name_or_path"] = str(out / part)
    model = build_mllm(cfg, {"name": "avgpool", "query_num": 64, "permute_tokens": 1}, load_tokenizer(**cfg["tokenizer"]))
    saved = load_file(out / "llm" / "model.safetensors")
    assert saved and all(torch.equal(model.llm.state_dict()[k], v) for k, v in saved.items())
