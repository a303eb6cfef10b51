"""`callbacks=[default,periodic_eval]`: a benchmark scored every N steps during training and logged, with the
value `deco.evaluate` gives for the checkpoint of the same step."""

from __future__ import annotations

import csv

import pytest

from deco.lit.benchmark_callback import BenchmarkEval, benchmark_config
from deco.train import train


def test_benchmark_logged_every_n_steps_matches_deco_evaluate(train_config, tmp_path):
    from conftest import compose_config

    from deco.evaluate import evaluate

    cfg = train_config("callbacks=[default,periodic_eval]", "callbacks.benchmark_eval.every_n_steps=2",
                       "callbacks.benchmark_eval.limit=6", "callbacks.benchmark_eval.batch_size=6",
                       "trainer.max_steps=4", "data.train.num_samples=16", "logger=csv", "query_num=16")
    train(cfg)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    key = "benchmark/shapes_existence/accuracy"
    logged = {int(r["step"]): float(r[key]) for r in rows if r.get(key)}
    assert sorted(logged) == [2, 4]  # every 2 steps; the end of training (step 4) is not scored twice
    assert (tmp_path / "benchmarks" / "shapes_existence" / "step_000004.jsonl").read_text().count("\n") == 6

    eval_cfg = compose_config("evaluate", [f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}",
                                           "benchmark=shapes_existence", "benchmark.limit=6", "batch_size=6",
                                           "logger=none", "progress=false"], tmp_path / "eval")
    assert evaluate(eval_cfg) == pytest.approx(logged[4], abs=1e-6)


def test_benchmark_config_by_name_and_clear_errors():
    config = benchmark_config("pope", eval_data_dir="/data/eval", limit=50)
    assert config["question_dir"] == "/data/eval/pope" and config["limit"] == 50
    with pytest.raises(ValueError, match="benchmark=nope is unknown"):
        BenchmarkEval("nope")
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        BenchmarkEval("shapes_existence", every_n_steps=0)
