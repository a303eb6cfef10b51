"""Figures 8-10 of `make bench`: time to accuracy from curves (hand-checked), the arena formula, the table rows,
and (slow) the smoke runs that start deco.train subprocesses."""

import json

import pytest

from experiments.perf import run, time_to_accuracy as tta


def test_reached_is_the_first_checkpoint_meeting_every_threshold():
    curve = {"300": {"existence": 95, "attribute": 91, "grounding": 49.5},
             "400": {"existence": 89.5, "attribute": 92, "grounding": 51},  # existence dipped below 90
             "500": {"existence": 90, "attribute": 90, "grounding": 50},  # "at or above"
             "1000": {"existence": 99, "attribute": 99, "grounding": 60}}
    assert tta.reached(curve) == 500
    assert tta.reached({"800": {"existence": 99, "attribute": 99, "grounding": 10}}) is None
    assert tta.reached({"900": curve["1000"], "100": curve["300"]}) == 900  # steps sorted as numbers


def test_figures_from_step_costs(monkeypatch, tmp_path):
    costs = {"old": {"cpu_s": 0.6, "wall_s": 1.0}, "cold": {"cpu_s": 0.6, "wall_s": 0.8},
             "warm": {"cpu_s": 0.3, "wall_s": 0.5}}
    monkeypatch.setattr(tta, "step_costs", lambda smoke, steps, rounds: costs)
    curves = {"new_default": {"curves": {"s42": {"500": {"existence": 99, "attribute": 98, "grounding": 52}},
                                         "s1": {"600": {"existence": 99, "attribute": 98, "grounding": 55}}},
                              "final": {"existence": 99.0, "attribute": 98.0, "grounding": 55.0}}}
    monkeypatch.setattr(tta, "CURVES", tmp_path / "curves.json")
    (tmp_path / "curves.json").write_text(json.dumps(curves))
    out = tta.run(smoke=True)
    cache, t = out["cache"], out["tta"]
    assert cache["warm_over_old_cpu"] == pytest.approx(0.5)
    assert cache["arena_over_old_cpu"] == pytest.approx((0.6 + 25 * 0.3) / (26 * 0.6))  # 0.519
    assert cache["meets_goal"]
    # new: mean 550 steps x 0.3 s; old: mean(600, 700, 600) = 633.3 steps x 0.6 s
    assert t["new"]["steps_to_accuracy"] == [500, 600]
    assert t["warm"]["cpu_ratio"] == pytest.approx(550 * 0.3 / (1900 / 3 * 0.6))
    assert t["cold"]["wall_ratio"] == pytest.approx(550 * 0.8 / (1900 / 3 * 1.0))
    assert t["final_accuracy_ok"] and t["meets_goal"]  # 0.434x, finals >= the old 99.0 / 98.0 / 54.8
    table = run.table({"figures": {"time_to_accuracy": out}})
    assert "0.52x (warm 0.50x, first run 1.00x)" in table, table
    assert "0.43x (0.43x); first run of a study 0.87x (0.69x)" in table, table
    curves["new_default"]["final"]["grounding"] = 47.5  # faster but worse at the end (< 54.8 - 6.8): not a win
    (tmp_path / "curves.json").write_text(json.dumps(curves))
    assert not tta.run(smoke=True)["tta"]["meets_goal"]


@pytest.mark.slow
def test_training_step_against_transformers_smoke():
    from experiments.perf import hf_train

    row = hf_train.run(smoke=True)["sizes"]["smoke"]
    assert row["loss_equal"] and row["loss"]["deco"] == pytest.approx(row["loss"]["transformers"], rel=1e-5)
    assert row["trainable_params"]["deco"] == row["trainable_params"]["transformers"]
    assert row["ratio"] > 0 and row["tower_layers"] == 1


@pytest.mark.slow
def test_subprocess_figures_smoke():
    out = tta.run(smoke=True)
    for way in ("old", "cold", "warm"):
        assert out["cache"]["costs"][way]["cpu_s"] > 0 and out["cache"]["costs"][way]["steps"] == 3  # steps 3..6
    from experiments.perf import llava_scale

    scale = llava_scale.run(smoke=True)
    assert scale["records"] == 5000 and scale["seconds_to_first_step"] > 0 and scale["peak_rss_bytes"] > 2**20
    assert any("records kept" in line for line in scale["reading_lines"])
