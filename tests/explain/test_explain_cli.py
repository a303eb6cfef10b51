"""`python -m deco.explain` on a trained checkpoint: single image, dataset mode, score mode, bad input; the callback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from explain_helpers import scene_image, trained_run
from PIL import Image

from deco.explain.__main__ import run
from deco.explain.export import ckpt_label, load_relevance

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["device=cpu", "progress=false"]


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return trained_run() / "checkpoints" / "last.ckpt"


def test_single_image_export_for_four_methods(ckpt, tmp_path):
    cfg = compose_config(
        "explain",
        [
            f"ckpt={ckpt}",
            f"image={scene_image(tmp_path)}",
            "text=A pot of green plants",
            "method=[rgae,rawattn,gradcam,attnlrp]",
            *FLAGS,
        ],
        tmp_path / "out",
    )
    records = run(cfg)["records"]
    out = tmp_path / "out"
    assert [r["method"] for r in records] == ["rgae", "rawattn", "gradcam", "attnlrp"]
    for method in ("rgae", "rawattn", "gradcam", "attnlrp"):
        for kind in ("R_t2i", "R_t2q", "R_q2i"):
            with Image.open(out / f"{kind}-{method}-A-pot-of-green-plants-avgpool2_16.png") as img:
                assert img.format == "PNG"
        data = load_relevance(out / f"relevance-{method}-A-pot-of-green-plants-avgpool2_16.pt")
        assert data["r_t2i"].shape == (24, 24) and data["r_q2i"].shape == (16, 576)
        assert float(data["r_t2q"].abs().sum()) > 0
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(index) == 4 and index[0]["files"]["tensors"] == "relevance-rgae-A-pot-of-green-plants-avgpool2_16.pt"


def test_two_checkpoints_of_one_projector_keep_their_files_and_compare(ckpt, tmp_path):
    seed2 = tmp_path / "seed2" / "checkpoints" / "last.ckpt"  # a second run of the same projector
    seed2.parent.mkdir(parents=True)
    seed2.write_bytes(ckpt.read_bytes())
    cfg = compose_config(
        "explain",
        [
            f"ckpt=[{ckpt},{seed2}]",
            f"image={scene_image(tmp_path)}",
            "text='Yes, it is green.'",
            "question=Is there a triangle?",
            *FLAGS,
        ],
        tmp_path / "out",
    )
    result = run(cfg)
    out = tmp_path / "out"
    tags = [r["tag"] for r in result["records"]]
    assert tags == ["avgpool2_16", "avgpool2_16-seed2"] and [r["ckpt"] for r in result["records"]] == [
        str(ckpt),
        str(seed2),
    ]
    for tag in tags:
        assert (out / f"R_t2i-rgae-Yes-it-is-green-{tag}.png").is_file()
        assert (out / f"relevance-rgae-Yes-it-is-green-{tag}.pt").is_file()
    assert result["comparisons"] == [out / "comparison-rgae-Yes-it-is-green.png"]
    with Image.open(result["comparisons"][0]) as img:
        assert img.format == "PNG" and img.height > 600  # two rows


def test_free_text_with_commas_is_quoted_for_hydra():
    from deco.explain.__main__ import FREE_TEXT_KEYS
    from deco.utils.overrides import quote_free_text

    argv = ["x", "text=Yes, it is red.", "question=Is it [red], or 'blue'?", "ckpt=a,b", "text2=a,b"]
    quoted = quote_free_text(argv, FREE_TEXT_KEYS)
    assert quoted[3:] == ["ckpt=a,b", "text2=a,b"]  # other keys keep Hydra's sweep grammar
    cfg = compose_config("explain", ["ckpt=a", *quoted[1:3]], Path("unused"))
    assert cfg.text == "Yes, it is red." and cfg.question == "Is it [red], or 'blue'?"
    assert quote_free_text(["text='kept'", "text=choice(a,b)"], FREE_TEXT_KEYS) == ["text='kept'", "text=choice(a,b)"]


def test_dataset_mode_exports_every_sample(ckpt, tmp_path):
    cfg = compose_config(
        "explain",
        [f"ckpt={ckpt}", "data=shapes", "num_samples=3", "images=false", "tensor_format=npz", *FLAGS],
        tmp_path / "out",
    )
    records = run(cfg)["records"]
    assert [r["index"] for r in records] == [0, 1, 2]
    files = sorted(p.name for p in (tmp_path / "out").glob("relevance-*.npz"))
    assert len(files) == 3 and files[0].startswith("relevance-rgae-00000-") and files[0].endswith("-avgpool2_16.npz")
    assert not list((tmp_path / "out").glob("*.png"))
    data = load_relevance(tmp_path / "out" / files[1])
    assert data["r_t2q"].shape == (16,) and float(data["r_t2i"].sum()) > 0


def test_score_mode_writes_csv_json_and_table(ckpt, tmp_path):
    cfg = compose_config(
        "explain",
        [
            f"ckpt=[{ckpt},{ckpt}]",
            "mode=score",
            "score.num_samples=2",
            "score.num_distractors=1",
            "score.perturbation=false",
            "score.methods=[rgae,rawattn,attnlrp]",
            *FLAGS,
        ],
        tmp_path / "out",
    )
    result = run(cfg)
    out = tmp_path / "out"
    lines = (out / "scores.csv").read_text().splitlines()
    # ckpts x (2 shapes + 1 distractor probe) x (3 methods + random)
    assert lines[0].startswith("probes,projector,checkpoint,method,index,task") and len(lines) == 1 + 2 * 3 * 4
    summary = json.loads((out / "summary.json").read_text())
    assert {s["method"] for s in summary} == {"rgae", "rawattn", "attnlrp", "random"}
    # the same file twice is still two checkpoints: two tags, each scored on its own probes
    assert {s["projector"] for s in summary} == {"avgpool2_16", f"avgpool2_16-{ckpt_label(str(ckpt))}"}
    assert all(s["n"] == (2 if s["probes"] == "shapes" else 1) and 0 <= s["energy"] <= 1 for s in summary)
    assert all(
        "causal_drop_top" in s and "distractor_energy" in s
        for s in summary
        if s["probes"] == "distractors" and s["method"] != "random"
    )  # the defaults: causal test on
    assert (out / "comparison.md").read_text().strip() == result["table"]
    assert f"| shapes | avgpool2_16 | {ckpt_label(str(ckpt))} | rgae | 2 |" in result["table"]


def test_bad_input_fails_with_a_clear_message(ckpt, tmp_path):
    cases = [
        ([f"ckpt={ckpt}", "text=hi"], "give image=<path>"),
        ([f"ckpt={ckpt}", "image=/no/such.png", "text=hi"], "image=/no/such.png: no such file"),
        ([f"ckpt={ckpt}", f"image={scene_image(tmp_path)}", "text=hi", "method=lrp"], "unknown"),
        (["ckpt=/no/such.ckpt", "text=hi"], "ckpt=/no/such.ckpt: no such file"),
    ]
    for overrides, message in cases:
        with pytest.raises(SystemExit, match=message):
            run(compose_config("explain", [*overrides, *FLAGS], tmp_path / "out"))


def test_relevance_callback_logged_pngs_and_wandb_images():
    run_dir = trained_run()
    for step in (2, 3):  # every_n_steps=2, and once at the end of training
        pngs = sorted(p.name for p in (run_dir / "relevance" / f"step_{step:06d}").glob("*.png"))
        assert len(pngs) == 2 * 3 * 2  # probes x kinds x methods (rgae, attnlrp)
        assert {"R_t2i-rgae-00-Square-avgpool2_16.png", "R_t2i-attnlrp-00-Square-avgpool2_16.png"} <= set(pngs)
    tensors = load_relevance(run_dir / "relevance" / "step_000002" / "relevance-rgae-00-Square-avgpool2_16.pt")
    assert tensors["r_t2i"].shape == (24, 24)
    media = list((run_dir / "wandb").glob("offline-run-*/files/media/images/relevance/R_t2i_rgae_*.png"))
    assert len(media) == 2 * 2  # 2 probes, logged at 2 steps
    lrp = list((run_dir / "wandb").glob("offline-run-*/files/media/images/relevance/R_t2i_attnlrp_*.png"))
    assert len(lrp) == 2 * 2
    assert not torch.equal(
        load_relevance(run_dir / "relevance" / "step_000002" / "relevance-rgae-00-Square-avgpool2_16.pt")["r_t2q"],
        load_relevance(run_dir / "relevance" / "step_000003" / "relevance-rgae-00-Square-avgpool2_16.pt")["r_t2q"],
    )  # the model trained in between


@pytest.mark.slow
def test_python_dash_m_entry_point(ckpt, tmp_path):
    image = scene_image(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deco.explain",
            f"ckpt={ckpt}",
            f"image={image}",
            "text=green",
            "method=rawattn",
            "device=cpu",
            f"hydra.run.dir={tmp_path / 'cli'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cli" / "R_t2i-rawattn-green-avgpool2_16.png").is_file()
