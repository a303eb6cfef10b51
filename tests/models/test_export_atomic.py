"""An export is all or nothing and its files follow the umask; a full disk is named (issue 29, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_loading_fixtures import write_llava_hf

from deco.export import export

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_llava_hf(tmp_path_factory.mktemp("hf") / "hf")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_files_follow_the_umask(source, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = export(str(source), str(tmp_path / "exported"))
    finally:
        os.umask(old)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (out / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_a_failed_export_leaves_no_directory_behind(source, tmp_path, monkeypatch):
    import deco.models.formats.deco_pretrained as fmt

    original = fmt.save_state_file

    def dies_after_half(state, path, **kw):  # the weights file half written, then the process "dies"
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt, "save_state_file", dies_after_half)
    with pytest.raises(KeyboardInterrupt):
        export(str(source), str(tmp_path / "exported"))
    assert list(tmp_path.iterdir()) == []  # neither "exported" nor a partial directory
    monkeypatch.setattr(fmt, "save_state_file", original)
    (tmp_path / "exported").mkdir()  # an empty directory given as out_dir= is filled
    assert (export(str(source), str(tmp_path / "exported")) / "model.safetensors").is_file()


FULL_DISK = """
import resource, signal, sys, torch
from deco.utils.io import atomic_write  # what AtomicCheckpointIO saves every checkpoint with
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: write() fails with EFBIG, as ENOSPC on a full disk
atomic_write(sys.argv[1], lambda f: torch.save({"state_dict": {"w": torch.ones(1000)}}, f))  # small: fits
resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, resource.RLIM_INFINITY))
try:
    atomic_write(sys.argv[1], lambda f: torch.save({"state_dict": {"w": torch.zeros(1_000_000)}}, f))
except OSError as error:
    print(type(error).__name__, error)
"""


def test_a_disk_without_room_is_named_and_the_previous_checkpoint_kept(tmp_path):
    from deco.models.formats.common import safe_torch_load
    from deco.utils.io import _mount_of

    ckpt = tmp_path / "last.ckpt"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK), str(ckpt)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith(f"DiskWriteError [Errno 27] could not write {ckpt}: File too large on the disk mounted "
                           f"at {_mount_of(tmp_path)} (")
    assert "the previous file, if any, is kept" in line
    assert safe_torch_load(ckpt)["state_dict"]["w"].tolist() == [1.0] * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no orphan temp file
