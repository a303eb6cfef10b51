"""deco.report on a synthetic sweep written here: table values against hand computations, CSV
round trip, figures that exist, and clear errors for bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from conftest import compose_config

from deco import report
from deco.report import __main__ as report_cli

T2 = 4.302652729749462  # t_{0.975, 2} (tables: 4.3027)

# val/loss of seeds 1, 2, 3 per projector; the other metrics derive from these by hand below.
VAL = {"avgpool": [1.0, 2.0, 4.0], "qformer": [3.0, 3.0, 6.0]}
ACC = {"avgpool": [0.5, 0.7, 0.6], "qformer": [0.4, 0.4, 0.4]}
PARAMS = {"avgpool": 1000, "qformer": 5000}


def write_run(root, projector, tokens, seed, val, acc, stage="finetune"):
    run = root / stage / f"{projector}-q{tokens}-s{seed}"
    (run / "csv").mkdir(parents=True)
    config = {"seed": seed, "stage": {"name": stage},
              "projector": {"name": projector, "query_num": tokens},
              "model": {"vision": {"config": {"image_size": 336, "patch_size": 14}}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    records = []
    for step in range(1, 9):  # loss 10 - step + seed; step time 1 s except slow warm-up steps
        records.append({"step": step, "train/loss": 10.0 - step + seed,
                        "train/step_time_s": 9.0 if step <= 2 else 0.5 * seed, "train/tokens_per_s": 100.0})
    records.append({"step": 8, "val/loss": val})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "csv" / "hparams.yaml").write_text(yaml.safe_dump(
        {"params/vision_trainable": 0, "params/projector_trainable": PARAMS[projector], "params/llm_trainable": 200}))
    # existence in percent (as deco.evaluate's POPE-style scorer writes it): the report reads it as 1.0
    for bench, family, value in (("shapes_attribute", "mllm", acc), ("shapes_existence", "mllm", 100.0),
                                 ("shapes_grounding", "localization", acc / 2)):
        out = run / "eval" / bench
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({
            "benchmark": bench, "family": family, "headline": "accuracy",
            "metrics": {"accuracy": value, "n": 10}}))
    (run / "relevance_score").mkdir()
    (run / "relevance_score" / "summary.json").write_text(json.dumps([
        {"projector": f"{projector}2_{tokens}", "method": "rgae", "n": 4, "energy": acc, "pointing": 0.25},
        {"projector": f"{projector}2_{tokens}", "method": "random", "n": 4, "energy": 0.1, "pointing": 0.0}]))
    rel = run / "relevance"
    rel.mkdir()
    g, n = 4, 16
    np.savez(rel / f"relevance-rgae-a-red-circle-{projector}_{tokens}.npz", r_t2i=np.random.rand(g, g),
             r_t2q=np.random.rand(tokens), r_q2i=np.random.rand(tokens, n), text=np.array("a red circle"))
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "sweep"
    for projector, tokens in (("avgpool", 4), ("qformer", 4)):
        for i, seed in enumerate((1, 2, 3)):
            write_run(root, projector, tokens, seed, VAL[projector][i], ACC[projector][i])
    # a linear run (no query_num: tokens from the 24 x 24 patch grid), one seed
    write_run(root, "avgpool", 576, 1, 5.0, 0.9).joinpath("config.yaml").write_text(yaml.safe_dump(
        {"seed": 1, "stage": {"name": "finetune"}, "projector": {"name": "linear"},
         "model": {"vision": {"config": {"image_size": 336, "patch_size": 14}}}}))
    return root


@pytest.fixture(scope="module")
def built(sweep):
    """The report of the synthetic sweep, built once for the tests that only read it."""
    out = sweep.parent / "out"
    return report.build_report(sweep, out), out


def cell(rows, projector, tokens, metric):
    match = [r for r in rows if (r["projector"], r["tokens"], r["metric"]) == (projector, tokens, metric)]
    assert len(match) == 1, (projector, tokens, metric, len(match))
    return match[0]


def test_t_quantiles():
    assert report.t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)  # tables: 12.7062
    assert report.t_quantile_975(2) == pytest.approx(4.3027, abs=1e-4)
    assert report.t_quantile_975(40) == pytest.approx(2.0211, abs=2e-4)  # tables: 2.0211
    assert report.t_quantile_975(120) == pytest.approx(1.9799, abs=2e-4)  # tables: 1.9799
    with pytest.raises(ValueError, match="degrees of freedom"):
        report.t_quantile_975(0)


def test_mean_ci_by_hand():
    mean, ci, n = report.mean_ci([1.0, 2.0, 4.0])
    # mean 7/3; sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3; sem = sqrt(7/3) / sqrt(3)
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert ci == pytest.approx(T2 * math.sqrt(7 / 3) / math.sqrt(3))
    assert report.mean_ci([2.5])[0] == 2.5 and math.isnan(report.mean_ci([2.5])[1])
    assert report.mean_ci([1.0, float("nan"), 3.0])[:2] == (2.0, pytest.approx(12.7062, abs=1e-4))
    assert report.mean_ci([])[2] == 0


def test_table_values(built):
    result, out = built
    rows = result["rows"]
    val = cell(rows, "avgpool", 4, "val_loss")
    assert val["n"] == 3 and val["seeds"] == [1, 2, 3]
    assert val["mean"] == pytest.approx(7 / 3)
    assert val["ci95"] == pytest.approx(T2 * math.sqrt(7 / 3) / math.sqrt(3))
    q = cell(rows, "qformer", 4, "val_loss")  # 3, 3, 6: mean 4, variance 3, sem 1
    assert (q["mean"], q["ci95"]) == (pytest.approx(4.0), pytest.approx(T2))
    # step time: warm-up steps 1-2 dropped, so 0.5 * seed -> mean 1.0, sd 0.5
    st = cell(rows, "avgpool", 4, "step_time_s")
    assert (st["mean"], st["ci95"]) == (pytest.approx(1.0), pytest.approx(T2 * 0.5 / math.sqrt(3)))
    # final loss: mean of steps 4..8 of 10 - step + seed = 4 + seed -> seeds 5, 6, 7
    assert cell(rows, "avgpool", 4, "train_loss_final")["mean"] == pytest.approx(6.0)
    assert cell(rows, "qformer", 4, "params_projector")["mean"] == 5000
    assert cell(rows, "qformer", 4, "params_trainable")["mean"] == 5200
    assert cell(rows, "qformer", 4, "params_trainable")["ci95"] == 0
    assert cell(rows, "avgpool", 4, "visual_tokens")["mean"] == 4
    assert cell(rows, "linear", 576, "visual_tokens")["n"] == 1  # 24 x 24 patches, no query_num
    assert math.isnan(cell(rows, "linear", 576, "val_loss")["ci95"])
    # evaluation: per benchmark headline, and the family mean (attribute and existence -> benchmarks)
    att = cell(rows, "avgpool", 4, "shapes_attribute/accuracy")
    assert att["mean"] == pytest.approx(0.6) and att["ci95"] == pytest.approx(T2 * 0.1 / math.sqrt(3))
    fam = cell(rows, "avgpool", 4, "family/benchmarks")  # (acc + 1) / 2 per seed
    assert fam["mean"] == pytest.approx(0.8)
    assert cell(rows, "qformer", 4, "family/localization")["mean"] == pytest.approx(0.2)
    assert cell(rows, "qformer", 4, "family/localization")["ci95"] == pytest.approx(0, abs=1e-12)

    assert cell(rows, "avgpool", 4, "shapes_existence/accuracy")["mean"] == pytest.approx(1.0)
    assert cell(rows, "avgpool", 4, "relevance_rgae/energy")["mean"] == pytest.approx(0.6)
    assert cell(rows, "qformer", 4, "relevance_random/pointing")["mean"] == 0.0

    md = (out / "summary.md").read_text()
    assert "## Training" in md and "## Evaluation and relevance" in md
    assert "| finetune | avgpool-4 | 3 |" in md
    assert f"2.333 ± {T2 * math.sqrt(7 / 3) / math.sqrt(3):.3f}" in md
    back = report.read_csv(out / "summary.csv")
    assert len(back) == len(rows)
    again = [r for r in back if (r["projector"], r["metric"]) == ("avgpool", "val_loss") and r["tokens"] == 4][0]
    assert again["values"] == [1.0, 2.0, 4.0] and again["mean"] == pytest.approx(7 / 3)


def test_figures(built):
    files = built[0]["files"]
    for name in ("convergence.png", "accuracy.png", "relevance.png"):
        path = files[name]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000, name


def test_relevance_over_probe_image(sweep, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "probe.png")
    runs = report.find_runs(sweep)
    assert report.plot_relevance(runs, tmp_path / "rel.png", probe_image=tmp_path / "probe.png")
    assert (tmp_path / "rel.png").stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="probe_image="):
        report.plot_relevance(runs, tmp_path / "rel2.png", probe_image=tmp_path / "nope.png")


def test_no_eval_no_relevance_figures(tmp_path):
    run = write_run(tmp_path / "s", "avgpool", 4, 1, 1.0, 0.5)
    for sub in ("eval", "relevance", "relevance_score"):
        for p in sorted((run / sub).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    files = report.build_report(tmp_path / "s")["files"]
    assert set(files) == {"summary.md", "summary.csv", "convergence.png"}
    assert "## Evaluation" not in files["summary.md"].read_text()
    assert files["summary.md"].parent == tmp_path / "s" / "report"


def test_bad_input(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        report.build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run dirs"):
        report.build_report(tmp_path / "empty")
    run = write_run(tmp_path / "bad", "avgpool", 4, 1, 1.0, 0.5)
    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        report.build_report(tmp_path / "bad")
    with pytest.raises(SystemExit, match="sweep_dir is required"):
        report_cli.run(compose_config("report", [], tmp_path))
    with pytest.raises(SystemExit, match="no such directory"):
        report_cli.run(compose_config("report", [f"sweep_dir={tmp_path / 'missing'}"], tmp_path))


def test_cli(sweep, tmp_path, capsys, monkeypatch):
    from deco.report import build

    monkeypatch.setattr(build, "plot_convergence", lambda runs, path: path.write_bytes(b"png"))  # figures: above
    monkeypatch.setattr(build, "plot_accuracy", lambda rows, path: False)
    monkeypatch.setattr(build, "plot_relevance", lambda *a, **k: False)
    cfg = compose_config("report", [f"sweep_dir={sweep}", f"out_dir={tmp_path / 'cli'}"], tmp_path)
    result = report_cli.run(cfg)
    out = capsys.readouterr().out
    assert "| finetune | qformer-4 | 3 |" in out and (tmp_path / "cli" / "summary.csv").is_file()
    assert set(result["files"]) == {"summary.md", "summary.csv", "convergence.png"}


def test_map_extent_on_non_square_probe():
    # pad: a 200 x 100 image sits in the middle of a 200 x 200 square -> the map overhangs 50 px above and below
    assert report.map_extent(200, 100, "pad") == (0, 200, 150, -50)
    assert report.map_extent(100, 200, "pad") == (-50, 150, 200, 0)
    assert report.map_extent(200, 100, "resize") == (0, 200, 100, 0)
    assert report.map_extent(200, 100, "crop") == (50, 150, 100, 0)  # the centre 100 x 100 square
    with pytest.raises(ValueError, match="image_aspect"):
        report.map_extent(2, 2, "stretch")


def test_visual_tokens_of_a_projector_without_query_num_from_the_zoo_tower():
    """The default model names its tower (zoo:tiny/vision) instead of inlining its config: 24 x 24 patches."""
    from deco.report.runs import visual_tokens

    config = {"projector": {"name": "linear"}, "model": {"vision": {"name_or_path": "zoo:tiny/vision"}}}
    assert visual_tokens(config) == 576


def test_one_seed_rates_get_a_ci_over_questions(tmp_path):
    run = write_run(tmp_path / "s", "avgpool", 4, 1, 1.0, 0.6)
    path = run / "eval" / "shapes_attribute" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_questions": 200}))
    rows = report.build_report(tmp_path / "s")["rows"]
    att = cell(rows, "avgpool", 4, "shapes_attribute/accuracy")
    # Wilson, by hand: z = 1.96, n = 200: 1.96 sqrt(0.24 / 200 + 3.8416 / 160000) / (1 + 3.8416 / 200) = 0.0673
    assert att["n"] == 1 and att["ci95"] == pytest.approx(0.0673, abs=5e-5)
    from deco.report.stats import binomial_ci

    assert binomial_ci(0.0, 8) == pytest.approx(0.162, abs=5e-4)  # 0 of 8 right: [0, 0.324], not "± 0"
    assert math.isnan(cell(rows, "avgpool", 4, "shapes_grounding/accuracy")["ci95"])  # no question count written


def test_evaluate_true_scores_the_runs_without_results(tmp_path, monkeypatch):
    from deco.report import evaluate_missing as em

    run = write_run(tmp_path / "s", "avgpool", 4, 1, 1.0, 0.6)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "eval" / "shapes_grounding" / "metrics.json").unlink()
    assert em.missing_evaluations(tmp_path / "s", ["shapes_attribute", "shapes_grounding"]) == [
        (run, "shapes_grounding")]
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return type("Done", (), {"returncode": 0, "stdout": ""})()

    monkeypatch.setattr(em.subprocess, "run", fake_run)
    cfg = compose_config("report", [f"sweep_dir={tmp_path / 's'}", "evaluate=true", "debug=fast"], tmp_path)
    assert cfg.out_dir == f"{tmp_path / 's'}/report"  # the job's last line names the report, not the log dir
    report_cli.run(cfg)
    assert [c[3:] for c in calls] == [[f"ckpt={run}/checkpoints/last.ckpt", "benchmark=shapes_grounding",
                                       f"hydra.run.dir={run}/eval/shapes_grounding", "logger=none",
                                       "benchmark.limit=8"]]
