"""Progress in log files: a line at a fixed interval when not on a TTY (deco.utils.progress, ProgressLog)."""

from __future__ import annotations

import logging

from deco.lit.progress_log import progress_line
from deco.utils.progress import eta_text, track


def test_track_logs_at_a_fixed_interval_off_a_tty(caplog):
    ticks = iter(range(0, 100, 10))  # the clock advances 10 s per call
    with caplog.at_level(logging.INFO, logger="deco.progress"):
        assert list(track(range(5), "convert", interval=25, tty=False, clock=lambda: next(ticks))) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    # start at 0 s; items end at 10, 20, 30 (30 - 0 >= 25: a line), 40, 50 (50 - 30 < 25); then the final line at 60 s
    assert lines == ["convert: 3/5 (60%), 30.0 s elapsed, ETA 20.0 s", "convert: 5/5 (100%), 60.0 s elapsed, ETA 0.0 s"]


def test_eta_and_training_lines():
    assert eta_text(0, None, 1.0) == "0 done, 1.0 s elapsed"
    assert eta_text(0, 4, 1.0) == "0/4 (0%), 1.0 s elapsed"
    assert progress_line(120, 800, 20, 50.0, loss=1.2345) == "step 120/800 (15%), loss 1.234, 0.50 s/step, ETA 5.7 min"
    assert progress_line(5, -1, 0, 2.0) == "step 5, 0.40 s/step"


def test_a_run_bounded_by_epochs_logs_its_total_and_eta(train_config, caplog):
    """The default recipe stops after one epoch (max_steps: -1): the line still has a total and an ETA."""
    from deco.train import train

    cfg = train_config("trainer.max_steps=-1", "trainer.max_epochs=2", "data.train.num_samples=8", "query_num=16",
                       "+callbacks.progress_log.interval_s=0", "+callbacks.progress_log.force=true",
                       "trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false")  # no bar: dropped, not refused
    with caplog.at_level(logging.INFO, logger="deco.progress"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "deco.progress"]
    # 8 samples / batch 4 = 2 steps per epoch, 2 epochs: 4 steps in all
    assert [line.split(",")[0] for line in lines] == ["step 1/4 (25%)", "step 2/4 (50%)", "step 3/4 (75%)",
                                                      "step 4/4 (100%)"]
    assert all("ETA" in line for line in lines), lines


def test_the_bar_counts_epochs_from_one():
    from types import SimpleNamespace

    from deco.lit.progress_log import EpochBar

    bar = EpochBar()
    bar._trainer = SimpleNamespace(max_epochs=1)
    assert bar._get_train_description(0).strip() == "epoch 1/1"


def test_the_run_settings_reach_the_experiment_logger(train_config, tmp_path):
    """W&B's config panel (and the CSV logger's hparams.yaml) holds seed, data mix, batch size and trainer."""
    import yaml

    from deco.train import train

    train(train_config("logger=csv", "trainer.max_steps=1", "data.train.num_samples=4", "query_num=16",
                       "trainer.limit_val_batches=0"))
    saved = yaml.safe_load(next(tmp_path.glob("**/hparams.yaml")).read_text())
    assert saved["seed"] == 42 and saved["query_num"] == 16
    assert saved["data"]["batch_size"] == 4 and saved["data"]["train"]["tasks"][:2] == ["caption", "attribute"]
    assert saved["trainer"]["max_steps"] == 1 and saved["recipe"]["loss_reduction"] == "sample"
