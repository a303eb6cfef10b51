"""The zoo study's table script: steps to 80 % and the curve read from intermediate evaluations."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _zoo_table():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "experiments/projector_study/zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(path: Path, value: float, headline: str = "accuracy") -> None:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"headline": headline, "metrics": {headline: value}}))


def _scores(run: Path, rows: list[dict]) -> None:
    """A run's relevance scores, as `deco.explain mode=score` writes them (score/summary.json)."""
    (run / "score").mkdir(parents=True)
    (run / "score" / "summary.json").write_text(json.dumps(rows))


def test_steps_to_target():
    zt = _zoo_table()
    assert zt.steps_to({100: 40.0, 200: 79.9, 300: 80.0}, 400, 95.0) == 300
    assert zt.steps_to({100: 40.0}, 400, 81.0) == 400  # reached only at the end
    assert zt.steps_to({100: 40.0}, 400, 60.0) is None
    assert zt.steps_to({}, 400, None) is None


def test_curve_table_from_run_dirs(tmp_path, capsys):
    zt = _zoo_table()
    for seed, scores in ((1, (50.0, 85.0)), (2, (70.0, 90.0))):
        run = tmp_path / f"avgpool-q64-s{seed}"
        _metrics(run / "curve" / "step100" / "shapes_attribute", scores[0])
        _metrics(run / "curve" / "step200" / "shapes_attribute", scores[1])
        _metrics(run / "curve" / "step100" / "shapes_existence", 50.0)
        _metrics(run / "eval" / "shapes_attribute", 91.0)
    runs = zt.read_runs(tmp_path)
    assert runs[("avgpool-q64", 1)]["curve"]["attribute"] == {100: 50.0, 200: 85.0}
    zt.main(tmp_path, 400)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| avgpool-q64 | 2 | 200, 200 |"))
    # existence never reached 80 (no final score either); attribute mean at step 100 = 60.0 (+- t * sd / sqrt 2)
    assert "| >400, >400 |" in row and "100: 60.0 ± 127.1; 200: 87.5 ± 31.8" in row, row


def test_perturbation_table_means_over_seeds(tmp_path, capsys):
    zt = _zoo_table()
    for seed, (pos, neg) in ((1, (-0.9, -0.6)), (2, (-0.7, -0.4))):
        _scores(tmp_path / f"qformer-q64-s{seed}", [
            {"method": "rgae", "energy": 0.5, "pointing": 0.5, "auc_positive": pos, "auc_negative": neg},
            {"method": "random", "energy": 0.1, "pointing": 0.1, "auc_positive": -0.5, "auc_negative": -0.5}])
    zt.main(tmp_path, 400)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| qformer-q64 | 2 | -"))
    assert row == "| qformer-q64 | 2 | -0.800 / -0.500 | - | - | -0.500 / -0.500 |", row


def test_relevance_means_over_seeds(tmp_path, capsys):
    zt = _zoo_table()
    for seed, energy in ((1, 0.4), (2, 0.6)):
        _scores(tmp_path / f"avgpool-q64-s{seed}", [
            {"method": "rgae", "energy": energy, "pointing": 1.0, "top_query_energy": 0.5},
            {"method": "random", "energy": 0.07, "pointing": 0.1}])
    zt.main(tmp_path, 400)
    out = capsys.readouterr().out.split("Relevance, mean over seeds")[1]
    row = next(line for line in out.splitlines() if line.startswith("| avgpool-q64 | 2 |"))
    # mean 0.5, half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1414 / 1.414 = 1.271
    assert row.startswith("| avgpool-q64 | 2 | 0.500 ± 1.271 | 1.000 ± 0.000 | 0.500 ± 0.000 | - | - | 0.070 ± 0.000 |"), row


def test_causal_table_means_over_seeds(tmp_path, capsys):
    zt = _zoo_table()
    for seed, drop in ((1, 0.3), (2, 0.5)):
        _scores(tmp_path / f"avgpool-q64-s{seed}", [
            {"method": "rgae", "energy": 0.5, "pointing": 1.0, "causal_drop_top": drop, "causal_drop_random": 0.0,
             "causal_flip_top": 1.0, "causal_flip_random": 0.25},
            {"method": "random", "energy": 0.07, "pointing": 0.1}])
    _scores(tmp_path / "qformer-q64-s1", [{"method": "rgae", "energy": 0.5, "pointing": 1.0}])  # no causal test: no row
    zt.main(tmp_path, 400)
    out = capsys.readouterr().out.split("Causal test")[1].splitlines()
    # drop: mean 0.4, half-width 12.706 * 0.1414 / 1.414 = 1.271
    assert "| avgpool-q64 | 2 | 0.400 ± 1.271 | 0.000 ± 0.000 | 1.000 ± 0.000 | 0.250 ± 0.000 |" in out
    assert not any(line.startswith("| qformer") for line in out)
