"""experiments/reduction_study without training: the run order, the deco.train command lines (LLaVA's two
stages for the 576-token linear model), CHECKPOINTS.md, and the table's mean ± 95 % CI over seeds."""

from pathlib import Path

import pytest

from experiments.reduction_study import recipe
from experiments.reduction_study.report import aggregate, label, table
from experiments.reduction_study.run import settings


def test_runs_are_seed_major_in_the_order_given():
    runs = recipe.parse_runs("qformer-q64, linear-q576,avgpool-q144", [42, 1])
    assert [r.name for r in runs] == [
        "qformer-q64-s42",
        "linear-q576-s42",
        "avgpool-q144-s42",
        "qformer-q64-s1",
        "linear-q576-s1",
        "avgpool-q144-s1",
    ]
    with pytest.raises(ValueError, match="--runs: 'resampler-q64'"):
        recipe.parse_runs("resampler-q64", [42])
    with pytest.raises(ValueError, match="--reuse: 'avgpool-q64=/x' is not"):
        recipe.parse_reuse("avgpool-q64=/x")
    assert recipe.parse_reuse("avgpool-q64-s1=/r/new-s1") == {"avgpool-q64-s1": Path("/r/new-s1")}


def test_one_stage_default_recipe_with_the_tower_cache():
    [(run_dir, args)] = recipe.train_commands(recipe.Run("qformer", 64, 1), Path("/o"), 800, 200, "/c")
    assert run_dir == Path("/o/qformer-q64-s1")
    assert args == [
        "projector=qformer",
        "query_num=64",
        "seed=1",
        "data.train.num_samples=25600",
        "logger=csv",
        "threads=1",
        "tower_features.enabled=true",
        "tower_features.cache_dir=/c",
        "hydra.run.dir=/o/qformer-q64-s1",
    ]


def test_linear_gets_pretrain_then_finetune_from_its_checkpoint():
    (pre_dir, pre), (ft_dir, ft) = recipe.train_commands(recipe.Run("linear", 576, 2), Path("/o"), 800, 200, None)
    assert pre_dir == Path("/o/linear-q576-s2-pretrain") and ft_dir == Path("/o/linear-q576-s2")
    assert pre == [
        "experiment=shapes_pretrain",
        "projector=linear",
        "query_num=576",
        "seed=2",
        "data.train.num_samples=6400",
        "logger=csv",
        "threads=1",
        "hydra.run.dir=/o/linear-q576-s2-pretrain",
    ]
    assert ft[:2] == ["experiment=shapes_finetune", "init_from=/o/linear-q576-s2-pretrain/checkpoints/last.ckpt"]
    assert "data.train.num_samples=25600" in ft and ft[-1] == "hydra.run.dir=/o/linear-q576-s2"
    # --pretrain-steps 0: the default recipe alone
    assert len(recipe.train_commands(recipe.Run("linear", 576, 2), Path("/o"), 800, 0, None)) == 1


def test_checkpoint_list_gets_each_run_once(tmp_path):
    path = tmp_path / "CHECKPOINTS.md"
    row = recipe.checkpoint_row(recipe.Run("linear", 576, 42), Path("/o/x.ckpt"), 800, 200)
    assert row == "| linear | 576 | 42 | 200 pretrain + 800 finetune | /o/x.ckpt |"
    recipe.record_checkpoint(path, row)
    recipe.record_checkpoint(path, row)
    assert path.read_text() == recipe.CHECKPOINTS_HEAD + row + "\n"


def _row(seed, existence, reduction="fastv", projector="linear"):
    eff = {"prefill_flops": 2e6 * seed, "ttft_ms": 10.0, "decode_ms_per_token": 1.0, "kv_cache_bytes": 2048}
    return {
        "projector": projector,
        "reduction": reduction,
        "keep": 64,
        "seed": seed,
        "existence": existence,
        "attribute": 90.0,
        "grounding": 30.0,
        "energy": 50.0,
        "efficiency": eff,
    }


def test_mean_and_student_t_interval_over_seeds():
    rows = [_row(1, 60.0), _row(2, 70.0), _row(1, 80.0, "none", "avgpool")]
    rows = [{**r, "run": f"{r['projector']}-q64-s{r['seed']}"} for r in rows]
    fastv, trained = aggregate([*rows, {**rows[0], "existence": 0.0}])  # a setting held twice counts once
    # 60, 70: mean 65, s = 7.0711, sem = 5, t(0.975, 1 df) = 12.7062 -> 63.53
    assert fastv["existence"][0] == 65.0 and fastv["existence"][1] == pytest.approx(63.531, abs=1e-3)
    assert fastv["mean"][0] == pytest.approx((65 + 90 + 30) / 3) and fastv["prefill_flops"] == 3e6
    assert trained["label"] == "trained avgpool" and trained["seeds"] == [1]
    lines = table(rows).splitlines()
    assert lines[2] == (
        "| fastv | 64 | 2 | 65.0 ± 63.5 | 90.0 ± 0.0 | 30.0 ± 0.0 | 61.7 ± 21.2 | 50.0 ± 0.0 | 3.0 | 10.0 | 1.00 | 2 |"
    )
    assert lines[3].startswith("| trained avgpool | 64 | 1 | 80.0 | 90.0 | 30.0 | 66.7 | 50.0 |")


def test_settings_per_checkpoint_kind():
    linear = settings("linear", [144, 64], 576)
    assert linear[0] == ("none", None) and len(linear) == 1 + 5 + 5  # pool at 144 and 64 (squares)
    assert ("pool", 64) in linear and ("fastv", 144) in linear
    assert settings("linear", [192], 576) == [
        ("none", None),
        ("fastv", 192),
        ("visionzip", 192),
        ("prumerge_plus", 192),
        ("divprune", 192),
    ]  # 192 is no square
    # trained at the budget: FastV only (in the LLM), only below the trained budget
    assert settings("qformer", [192, 144, 64, 16], 144) == [("none", None), ("fastv", 64), ("fastv", 16)]
    row = {"projector": "avgpool", "reduction": "fastv", "run": "avgpool-q144-s1"}
    assert label(row) == "fastv on avgpool-q144" and label({**row, "reduction": "none"}) == "trained avgpool"
