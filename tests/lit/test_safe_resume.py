"""Resuming safely: crafted checkpoints run nothing, a resume into another model is refused, the run dir is locked."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_RUN, compose_config
from deco.lit.resume import LOCK_NAME, RunDirLock
from deco.models.loading import UnsafeCheckpointError, load_model
from deco.train import train

ROOT = Path(__file__).resolve().parents[2]
FAST = [*TINY_RUN, "stage=pretrain", "query_num=16", "trainer.max_steps=2"]


class Payload:
    """Unpickling it touches a marker file: proof that code from the checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_payload(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": 1, "x": Payload(marker)}, path)
    return path


@pytest.mark.parametrize("how", ["resume_auto", "ckpt_path", "init_from"])
def test_crafted_checkpoint_is_refused_whatever_the_environment_says(tmp_path, monkeypatch, how):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's documented opt-out
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    if how == "resume_auto":
        write_payload(run_dir / "checkpoints" / "last.ckpt", marker)
        overrides = []
    else:
        overrides = [f"{how}={write_payload(tmp_path / 'evil.ckpt', marker)}"]
    with pytest.raises(SystemExit, match="refusing to load .*Nothing in it was run"):
        train(compose_config("train", [*FAST, *overrides], run_dir))
    assert not marker.exists()


def test_lightning_checkpoint_io_refuses_too(tmp_path, monkeypatch):
    """The second line of defence, for anything that hands Lightning a path directly."""
    from deco.lit.checkpointing import AtomicCheckpointIO

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = write_payload(tmp_path / "evil.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_model(path)
    assert not marker.exists()


def test_resume_into_another_projector_is_refused_and_config_kept(tmp_path):
    """The README's resume command, with the run's projector override forgotten."""
    train(compose_config("train", [*FAST, "projector=maxpool"], tmp_path))
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(SystemExit, match=r"refusing to resume .*projector.name: 'maxpool' -> 'avgpool'"):
        train(compose_config("train", [*FAST, "trainer.max_steps=3"], tmp_path))
    assert (tmp_path / "config.yaml").read_text() == saved


def test_resume_with_other_settings_keeps_the_earlier_config(tmp_path):
    train(compose_config("train", [*FAST, "trainer.max_steps=3"], tmp_path))  # one epoch
    first = (tmp_path / "config.yaml").read_text()
    train(compose_config("train", [*FAST, "trainer.max_steps=6", "trainer.max_epochs=2"], tmp_path))  # longer: allowed
    assert (tmp_path / "config.previous-1.yaml").read_text() == first
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["max_steps"] == 6
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_orphan_tmp_files_are_removed_on_resume(tmp_path):
    train(compose_config("train", FAST, tmp_path))
    orphan = tmp_path / "checkpoints" / ".last.ckpt.abc123.tmp"  # what a kill during a save leaves
    orphan.write_bytes(b"\x80partial")
    train(compose_config("train", [*FAST, "trainer.max_steps=3"], tmp_path))
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_second_run_in_a_live_run_dir_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from deco.lit.resume import RunDirLock
            lock = RunDirLock({str(tmp_path)!r}).acquire()
            print("locked", flush=True)
            time.sleep(120)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=f"run dir {tmp_path} is in use by pid {holder.pid} on "):
            train(compose_config("train", FAST, tmp_path))
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    train(compose_config("train", FAST, tmp_path))  # the holder died (SIGKILL): the lock went with it
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released at the end of the run


def test_lock_is_exclusive_within_and_across_processes(tmp_path):
    with RunDirLock(tmp_path):
        assert str(os.getpid()) in (tmp_path / LOCK_NAME).read_text()
    with RunDirLock(tmp_path):  # released: can be taken again
        pass


def test_unwritable_checkpoint_dir_is_found_at_start(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(SystemExit, match=f"cannot write checkpoints to {tmp_path / 'checkpoints'}"):
        train(compose_config("train", FAST, tmp_path))
