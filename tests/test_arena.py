"""The projector arena (experiments/arena): its jobs, statistics, table and selection on fixture run dirs
(hand-computed means, CIs, tau and rho), and a smoke of the arena command with two tiny jobs (slow)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.arena import promote, select, table
from experiments.arena.jobs import Settings, arena_jobs, evaluation_steps, training_steps, tuning_jobs
from experiments.arena.stats import mean_ci, overall, rank_correlation

T975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)
T975_1 = 12.706204736174707  # 1 degree of freedom
ROOT = Path(__file__).resolve().parents[1]


def write_run(root: Path, name: str, scores: tuple[float, float, float, float], params: int = 100,
              config: str | None = None) -> None:
    for bench, value in zip(("shapes_existence", "shapes_attribute", "shapes_grounding", "shapes_caption"), scores):
        headline = "cider" if bench == "shapes_caption" else "accuracy"
        (root / name / "eval" / bench).mkdir(parents=True)
        (root / name / "eval" / bench / "metrics.json").write_text(json.dumps({"headline": headline, "metrics": {headline: value}}))
    (root / name / "csv").mkdir()
    (root / name / "csv" / "hparams.yaml").write_text(f"params/projector_trainable: {params}\nparams/llm_trainable: 1000\n")
    if config is not None:  # the composed config deco.train leaves in the run dir
        (root / name / ".hydra").mkdir()
        (root / name / ".hydra" / "config.yaml").write_text(config)


def test_mean_ci_overall_and_rank_correlation_by_hand():
    m, half = mean_ci([1.0, 2.0, 3.0])  # sd 1
    assert m == 2.0 and math.isclose(half, T975_2 / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None) and mean_ci([]) is None and mean_ci([float("nan")]) is None
    assert overall({"existence": 90, "attribute": 80, "grounding": 50, "caption": 700}) == (90 + 80 + 50 + 70) / 4
    assert overall({"existence": 90}) is None
    # arena a > b > d > c, published a > b > c > d: one discordant pair of six
    n, tau, rho = rank_correlation({"a": 4, "b": 3, "c": 1, "d": 2, "x": 9}, {"a": 10, "b": 9, "c": 8, "d": 7})
    assert n == 4 and math.isclose(tau, (5 - 1) / 6) and math.isclose(rho, 1 - 6 * 2 / (4 * (16 - 1)))
    assert rank_correlation({"a": 1, "b": 2}, {"a": 1, "b": 2}) is None


def test_jobs_cover_the_arena_and_the_budget(tmp_path):
    jobs = arena_jobs()
    assert len(jobs) == 3 * (2 + 10 * 2)  # 3 seeds x (linear, mlp at 576 + ten projectors at 144 and 64)
    assert jobs[0].name == "linear-q576-s42" and {j.tokens for j in jobs if j.projector == "qformer"} == {144, 64}
    tune = tuning_jobs()
    assert len(tune) == 8 * 4 + 4 * 8  # lr x4; attention projectors x heads {default, 4}
    q = [j for j in tune if j.projector == "qformer"]
    assert q[1].name == "qformer-lr0.5-h4-q64-s42" and q[1].overrides == ("stage.projector_lr=0.001", "projector.num_attention_heads=4")
    s = Settings(out=tmp_path, validation=True)
    (pre, pre_cmd), (ft, ft_cmd) = training_steps(s, jobs[0])
    assert "experiment=shapes_pretrain" in pre_cmd and "+arena=linear" in pre_cmd and "trainer.max_steps=200" in pre_cmd
    assert f"init_from={tmp_path}/linear-q576-s42-pretrain/checkpoints/last.ckpt" in ft_cmd and ft == tmp_path / "linear-q576-s42" / "done"
    (tmp_path / "linear-q576-s42" / "checkpoints" / "curve").mkdir(parents=True)
    (tmp_path / "linear-q576-s42" / "checkpoints" / "curve" / "step400.ckpt").touch()
    steps = evaluation_steps(s, jobs[0])
    marker, cmd = steps[0]
    assert "benchmark.seed=60000" in cmd and marker.name == "metrics.json"  # tuning scores on the validation world
    assert len(steps) == 4 and len(evaluation_steps(Settings(out=tmp_path), jobs[0])) == 4 + 3  # trials: no curve


def test_table_means_cis_paired_differences_and_tau(tmp_path, capsys):
    # avgpool-64: seeds 1, 2 -> grounding 50, 60; qformer: 10, 30 (paired differences -40, -30)
    write_run(tmp_path, "avgpool-q64-s1", (90, 90, 50, 700), config="stage:\n  projector_lr: 0.001\n")
    write_run(tmp_path, "avgpool-q64-s2", (92, 94, 60, 720), config="stage:\n  projector_lr: 2e-3\n")
    heads4 = "stage:\n  projector_lr: 0.002\nprojector:\n  num_attention_heads: 4\n"
    write_run(tmp_path, "qformer-q64-s1", (90, 90, 10, 500), params=300, config=heads4)
    write_run(tmp_path, "qformer-q64-s2", (90, 92, 30, 600), params=300, config=heads4)
    for name, g in (("tokenpacker", 70), ("ldpv2", 55), ("resampler", 40)):  # one seed each
        write_run(tmp_path, f"{name}-q64-s1", (90, 90, g, 700))
    (tmp_path / "avgpool-q64-s1-pretrain").mkdir()  # a pretrain dir is not a row
    table.main([str(tmp_path), "--steps", "800"])
    out = capsys.readouterr().out.splitlines()
    row = next(x for x in out if x.startswith("| avgpool | 64 | 2 |"))
    assert row.startswith("| avgpool | 64 | 2 | lr 0.001 / lr 0.002 |")  # seeds that ran at two settings show both
    assert any(x.startswith("| qformer | 64 | 2 | lr 0.002, 4 heads |") for x in out)
    assert any(x.startswith("| tokenpacker | 64 | 1 | ? |") for x in out)  # no config left: unknown, not guessed
    half = T975_1 * math.sqrt(50) / math.sqrt(2)  # grounding 50, 60: sd sqrt(50)
    assert f"| 55.0 ± {half:.1f} |" in row and "| 24832" not in row and "| 100 | 1100 |" in row
    # overall per seed: (90+90+50+70)/4 = 75, (92+94+60+72)/4 = 79.5: sd 4.5 / sqrt 2
    assert f"| 77.2 ± {T975_1 * (4.5 / math.sqrt(2)) / math.sqrt(2):.1f} |" in row
    paired = [x for x in out if x.startswith("| qformer | 64 | 2 |")][-1]  # the paired table comes after the arena's
    assert f"| -35.0 ± {T975_1 * math.sqrt(50) / math.sqrt(2):.1f} |" in paired  # grounding: -40, -30
    # overall at 64: tokenpacker 80 > avgpool 77.25 > ldpv2 76.25 > resampler 72.5;
    # Table 3 at 64: tokenpacker 61.9 > ldpv2 60.6 > resampler 60.1 > avgpool 59.1.
    # Pairs: concordant tp-avg, tp-ldpv2, tp-res, ldpv2-res; discordant avg-ldpv2, avg-res: tau = (4 - 2) / 6.
    # Ranks (arena, Table 3): tp 1, 1; avg 2, 4; ldpv2 3, 2; res 4, 3: sum d^2 = 0 + 4 + 1 + 1.
    corr = next(x for x in out if x.startswith("| 64 | 4 |"))
    tau, rho = (4 - 2) / 6, 1 - 6 * (0 + 4 + 1 + 1) / (4 * 15)
    assert f"| {tau:.2f} | {rho:.2f} |" in corr and "tokenpacker > avgpool > ldpv2 > resampler" in corr
    assert "| 144 | 0 | - | - |" in "\n".join(out)  # no run at 144: no correlation claimed
    # per task at 64, against Table 3's tp > ldpv2 > resampler > avgpool. Grounding: tp 70 > avgpool 55 = ldpv2 55
    # > resampler 40: 4 concordant pairs, 1 discordant (avgpool-resampler), 1 tied in x: tau-b = 3 / sqrt(5 x 6).
    # Existence: avgpool 91 > the others' 90 (three tied pairs): 3 discordant: tau-b = -3 / sqrt(3 x 6).
    by_task = next(x for x in out if x.startswith("| 64 |") and "(4)" in x).strip("| ").split(" | ")
    assert by_task[3] == f"{3 / math.sqrt(5 * 6):.2f} (4)" and by_task[1] == f"{-3 / math.sqrt(3 * 6):.2f} (4)"


def test_control_table_pairs_plain_and_permuted_avgpool_by_seed(tmp_path, capsys):
    plain, permuted = tmp_path / "arena", tmp_path / "perm"
    for seed, g in ((1, 50), (2, 60), (3, 40)):
        write_run(plain, f"avgpool-q64-s{seed}", (90, 90, g, 700))
    write_run(plain, "avgpool-q144-s1", (90, 90, 40, 700))
    for seed, g in ((1, 44), (2, 58), (3, 41)):  # differences 6, 2, -1: mean 7/3, within 5 points
        write_run(permuted, f"avgpool-q64-s{seed}", (88, 92, g, 700))
    write_run(permuted, "avgpool-q144-s1", (90, 90, 30, 700))  # 10 points behind: fails
    table.main([str(plain), "--control", str(permuted)])
    out = capsys.readouterr().out.split("## The layout control")[1].splitlines()
    sd = math.sqrt(((6 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (-1 - 7 / 3) ** 2) / 2)
    row64 = next(x for x in out if x.startswith("| 64 | 1, 2, 3 |"))
    assert f"| 50.0 ± {T975_2 * 10 / math.sqrt(3):.1f} |" in row64  # 50, 60, 40: sd 10
    assert f"| {7 / 3:.1f} ± {T975_2 * sd / math.sqrt(3):.1f} | yes |" in row64
    assert "| 90.0 ± 0.0 / 88.0 ± 0.0 |" in row64
    assert next(x for x in out if x.startswith("| 144 | 1 |")).count("| 10.0 | no |") == 1
    tuned = tmp_path / "tuned"  # the arena's avgpool at another setting: the control keeps its own plain runs
    write_run(tuned, "avgpool-q64-s1", (90, 90, 0, 700))
    table.main([str(tuned), "--control", str(permuted), "--control-plain", str(plain)])
    assert any(x.startswith("| 64 | 1, 2, 3 |") for x in capsys.readouterr().out.split("## The layout control")[1].splitlines())


def test_select_writes_the_best_complete_budget(tmp_path, capsys):
    runs, configs = tmp_path / "tune", tmp_path / "configs"
    configs.mkdir()
    for scale, g in (("0.5", 40), ("1", 50), ("2", 60), ("4", 60)):  # x2 and x4 tie: the smaller lr wins
        write_run(runs, f"avgpool-lr{scale}-q64-s42", (90, 90, g, 700))
    write_run(runs, "qformer-lr1-q64-s42", (90, 90, 10, 500))  # 1 of 8 trials: not chosen
    select.main([str(runs), "--configs", str(configs), "--table"])
    out = capsys.readouterr().out.splitlines()
    assert "| avgpool | 2 | default | 90.0 | 90.0 | 60.0 | 700.0 | 77.5 | **yes** |" in out
    assert "| avgpool | 4 | default | 90.0 | 90.0 | 60.0 | 700.0 | 77.5 |  |" in out  # the tie goes to the smaller lr
    assert "| qformer | 1 | default | 90.0 | 90.0 | 10.0 | 500.0 | 60.0 |  |" in out  # incomplete: nothing chosen
    text = (configs / "avgpool.yaml").read_text()
    assert "projector_lr: 0.004\n" in text and "lr x2: 77.5" in text and "lr x0.5: 72.5" in text
    assert not (configs / "qformer.yaml").exists()


def test_promote_links_the_chosen_trial_as_the_arena_job(tmp_path):
    tune, arena = tmp_path / "tune", tmp_path / "arena"
    for scale, g in (("0.5", 40), ("1", 50), ("2", 60), ("4", 55)):
        write_run(tune, f"avgpool-lr{scale}-q64-s42", (90, 90, g, 700))
        (tune / f"avgpool-lr{scale}-q64-s42" / "checkpoints" / "curve").mkdir(parents=True)
        for ckpt in ("last.ckpt", "curve/step400.ckpt", "curve/step800.ckpt"):
            (tune / f"avgpool-lr{scale}-q64-s42" / "checkpoints" / ckpt).write_text(scale)
    promote.main([str(tune), str(arena)])
    job = arena / "avgpool-q64-s42"
    assert (job / "checkpoints" / "last.ckpt").read_text() == "2"  # lr x2 scored best on the validation world
    assert (job / "csv" / "hparams.yaml").is_file() and "avgpool-lr2-q64-s42" in (job / "PROMOTED").read_text()
    s = Settings(out=arena, curve=400)
    j = arena_jobs(["avgpool"], (64,), (42,))[0]
    assert all(marker.exists() for marker, _ in training_steps(s, j))  # nothing is retrained
    pending = [m.relative_to(job).as_posix() for m, _ in evaluation_steps(s, j)]
    assert not (job / "eval").exists() and "curve/step400/shapes_grounding/metrics.json" in pending and len(pending) == 7
    (job / "eval").mkdir()
    promote.main([str(tune), str(arena)])  # an existing job is left alone
    assert (job / "eval").is_dir() and (job / "checkpoints").resolve() == (tune / "avgpool-lr2-q64-s42" / "checkpoints")


def test_shipped_arena_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["projector=qformer", "+arena=qformer", "projector.num_attention_heads=4"])
    assert cfg.stage.projector_lr == 2.0e-3 and cfg.projector.num_attention_heads == 4


@pytest.mark.slow
def test_arena_command_runs_two_tiny_jobs_end_to_end(tmp_path):
    out = tmp_path / "arena"
    cmd = [sys.executable, "-m", "experiments.arena.run", "--out", str(out), "--projectors", "avgpool", "qformer",
           "--tokens", "64", "--seeds", "42", "--steps", "2", "--pretrain-steps", "2", "--batch", "2", "--curve", "1",
           "--benchmarks", "shapes_existence", "shapes_grounding", "--eval-extra", "benchmark.limit=2",
           "--extra", "data.val.num_samples=2", "trainer.limit_val_batches=1", "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.split() == ["avgpool-q64-s42:", "ok", "qformer-q64-s42:", "ok"], proc.stdout
    for name in ("avgpool-q64-s42", "qformer-q64-s42"):
        assert (out / f"{name}-pretrain" / "done").is_file() and (out / name / "done").is_file()
        assert json.loads((out / name / "eval" / "shapes_grounding" / "metrics.json").read_text())["num_questions"] == 2
        assert (out / name / "curve" / "step1" / "shapes_existence" / "metrics.json").is_file()
    logged = (out / "avgpool-q64-s42.log").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)  # resumed: nothing left to run
    assert again.returncode == 0 and (out / "avgpool-q64-s42.log").read_text() == logged  # no command was rerun
    rows = table.read_runs(out)
    assert set(rows) == {("avgpool", 64), ("qformer", 64)} and rows[("qformer", 64)][42]["projector_params"] == 146048
    assert any((tmp_path / "cache").rglob("*")), "the jobs share the tower-feature cache"
