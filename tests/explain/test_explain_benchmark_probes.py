"""`deco.explain mode=score benchmark=refcoco`: a RefCOCO-format file and images the test writes, boxes by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from explain_helpers import tiny_model, trained_run
from PIL import Image

from deco.eval.benchmarks import RefCOCO, ShapesBenchmark
from deco.explain.__main__ import run
from deco.explain.benchmark_probes import benchmark_probes, reference_box
from deco.explain.methods import explain
from deco.explain.score import random_map

FLAGS = ["device=cpu", "progress=false"]
PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."


def write_refcoco(root: Path, boxes=((10, 0, 20, 20), (0, 0, 16, 8))) -> tuple[Path, Path]:
    """MDETR layout: final_refcoco_testA.json (one image entry per expression) + a 40 x 20 and a 16 x 16 image."""
    images = root / "train2014"
    images.mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 30, 30)).save(images / "wide.jpg")
    Image.new("RGB", (16, 16), (30, 30, 200)).save(images / "square.jpg")
    data = {
        "images": [
            {"id": 7, "file_name": "wide.jpg", "width": 40, "height": 20, "caption": "the red block."},
            {"id": 8, "file_name": "square.jpg", "width": 16, "height": 16, "caption": "top half"},
        ],
        "annotations": [{"image_id": 7, "bbox": list(boxes[0])}, {"image_id": 8, "bbox": list(boxes[1])}],
    }
    annotation = root / "refcoco" / "final_refcoco_testA.json"
    annotation.parent.mkdir(parents=True)
    annotation.write_text(json.dumps(data))
    return annotation, images


def refcoco(tmp_path, **kwargs) -> RefCOCO:
    annotation, images = write_refcoco(tmp_path, **kwargs)
    return RefCOCO(str(annotation), str(images), name="refcoco_testA")


def test_probes_carry_the_reference_box_in_the_frame_the_model_sees(tmp_path):
    _, tokenizer, processor = tiny_model("avgpool")
    probes = benchmark_probes(refcoco(tmp_path), tokenizer, processor, "vicuna_v1", "pad")
    # 40 x 20 padded to a 40 x 40 square, pasted 10 px down: x 10..30 -> 0.25..0.75, y 0..20 -> 10..30 -> 0.25..0.75
    assert probes[0].box == (0.25, 0.25, 0.75, 0.75) and probes[1].box == (0.0, 0.0, 1.0, 0.5)
    assert probes[0].inp.text == "[0.25, 0.25, 0.75, 0.75]" and probes[1].inp.text == "[0.00, 0.00, 1.00, 0.50]"
    assert probes[0].inp.question == PROMPT.format("the red block") and probes[0].phrase == "the red block"
    assert [p.probe_set for p in probes] == ["refcoco_testA"] * 2 and [p.index for p in probes] == [0, 1]
    assert probes[0].task == "grounding" and probes[0].inp.meta["id"] == 7
    # the padded image the model sees: the grey rows above and below the red photo
    seen = probes[0].inp.image
    assert seen.size[0] == seen.size[1] and seen.getpixel((seen.size[0] // 2, 2)) != seen.getpixel(
        (seen.size[0] // 2, seen.size[1] // 2)
    )
    stretched = benchmark_probes(refcoco(tmp_path / "r"), tokenizer, processor, "plain", "resize", num_samples=1)
    assert len(stretched) == 1 and stretched[0].box == (0.25, 0.0, 0.75, 1.0)  # the stretched image: y 0..20 of 20
    assert stretched[0].inp.text == "the red block" and stretched[0].inp.question is None
    assert stretched[0].task == "caption"


def test_boxes_are_clipped_to_the_image_and_empty_ones_named():
    assert reference_box((-0.01, 0.2, 1.02, 0.9), "f.json images[0]") == (0.0, 0.2, 1.0, 0.9)
    with pytest.raises(ValueError, match=r"f.json images\[3\]: the reference box .* has no area"):
        reference_box((1.0, 0.2, 1.3, 0.9), "f.json images[3]")


def test_only_grounding_benchmarks_and_visible_frames_are_scored(tmp_path):
    _, tokenizer, processor = tiny_model("avgpool")
    with pytest.raises(ValueError, match="has no reference boxes.*refcoco, refcoco_plus, refcocog"):
        benchmark_probes(ShapesBenchmark(task="attribute", num_samples=2), tokenizer, processor, "vicuna_v1", "pad")
    with pytest.raises(ValueError, match="grounding boxes need image_aspect 'pad' or 'resize'"):
        benchmark_probes(refcoco(tmp_path), tokenizer, processor, "vicuna_v1", "crop")


def _energy_by_hand(rel: torch.Tensor, rows: slice, cols: slice) -> float:
    norm = (rel - rel.min()) / (rel.max() - rel.min())
    return float(norm[rows, cols].sum() / norm.sum())


def test_score_mode_on_a_refcoco_file_scores_its_boxes(tmp_path):
    ckpt = trained_run() / "checkpoints" / "last.ckpt"
    annotation, images = write_refcoco(tmp_path / "data")
    cfg = compose_config(
        "explain",
        [
            f"ckpt={ckpt}",
            "mode=score",
            "benchmark=refcoco",
            f"benchmark.annotation_file={annotation}",
            f"benchmark.image_folder={images}",
            "score.num_samples=1",
            "score.methods=[rawattn]",
            "score.perturbation=false",
            "score.causal=0",
            *FLAGS,
        ],
        tmp_path / "out",
    )
    summary = run(cfg)["summary"]
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert [(r["probes"], r["method"], r["index"]) for r in rows] == [
        ("refcoco_testA", "rawattn", "0"),
        ("refcoco_testA", "random", "0"),
    ]
    assert {(s["probes"], s["method"], s["n"]) for s in summary} == {
        ("refcoco_testA", "rawattn", 1),
        ("refcoco_testA", "random", 1),
    }
    # box (0.25, 0.25, 0.75, 0.75) on the 24 x 24 patch grid: exactly patches 6..17 in both directions
    inside = slice(6, 18)
    noise = random_map(24, 0)
    assert float(rows[1]["energy"]) == pytest.approx(_energy_by_hand(noise, inside, inside), abs=1e-6)
    assert float(rows[1]["box_area"]) == pytest.approx(0.25)
    r, c = divmod(int(noise.flatten().argmax()), 24)
    assert float(rows[1]["pointing"]) == float(6 <= r <= 17 and 6 <= c <= 17)
    from deco.models.loading import load_model

    loaded = load_model(str(ckpt))
    template = (loaded.config.get("stage") or {}).get("template") or "vicuna_v1"  # what mode=score asks with
    probe = benchmark_probes(
        RefCOCO(str(annotation), str(images), name="refcoco_testA"),
        loaded.tokenizer,
        loaded.image_processor,
        template,
        "pad",
        1,
    )[0]
    rel = explain(loaded.model, probe.inp, "rawattn", loaded.tokenizer).r_t2i
    assert float(rows[0]["energy"]) == pytest.approx(_energy_by_hand(rel, inside, inside), rel=1e-5)


def test_benchmark_needs_score_mode_and_no_data(tmp_path):
    ckpt = trained_run() / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit, match="use it with mode=score"):
        run(
            compose_config("explain", [f"ckpt={ckpt}", "benchmark=refcoco", "image=x.png", "text=hi", *FLAGS], tmp_path)
        )
    with pytest.raises(SystemExit, match=r"benchmark=refcoco_testA: .*annotation_file not found"):
        run(
            compose_config(
                "explain",
                [f"ckpt={ckpt}", "mode=score", "benchmark=refcoco", "eval_data_dir=/no/such", *FLAGS],
                tmp_path,
            )
        )


def test_a_preset_setting_under_benchmark_is_not_a_benchmark(tmp_path):
    """debug=fast sets `benchmark.limit` (for deco.evaluate): explain must not take that node for benchmark=..."""
    from deco.explain.score_cli import chosen_benchmark

    fast = compose_config("explain", ["ckpt=x.ckpt", "image=x.png", "text=hi", "debug=fast"], tmp_path)
    assert fast.benchmark == {"limit": 8} and chosen_benchmark(fast) is None
    chosen = compose_config("explain", ["ckpt=x.ckpt", "mode=score", "benchmark=refcoco"], tmp_path)
    assert chosen_benchmark(chosen).name == "refcoco_testA"

