"""Small file helpers: writes that never leave a half-written file behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class DiskWriteError(OSError):
    """A write failed for lack of room (disk full, quota, file size limit); the message names the disk."""


class _Watched:
    """A binary file whose write errors are remembered: torch.save turns them into "unexpected pos" RuntimeErrors."""

    def __init__(self, f: BinaryIO):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _mount_of(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_write_error(path: Path, error: OSError) -> DiskWriteError:
    """The error of a failed write of `path`, naming the disk (mount point) and its free space."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskWriteError(error.errno, f"could not write {path}: {error.strerror or error} on the disk mounted at "
                          f"{_mount_of(path.parent)} ({free}); nothing was replaced: the previous file, if any, "
                          "is kept. Free space there (or write elsewhere) and run again")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """Call `write(f)` on a temporary file in the same directory, fsync, then rename over `path`.

    A crash or kill at any point leaves either the old file or the new one, never a partial file.
    The file gets the mode any other tool would give it (0666 minus the umask). A full disk (or quota,
    or file size limit) raises `DiskWriteError` naming the disk, whatever `write` turned the error into.
    `durable=False` skips the fsync: for caches, whose entries a power loss may drop but never tear.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    watched = None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() would respect the umask
        with os.fdopen(fd, "wb") as f:
            watched = _Watched(f)
            write(watched)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = watched.error if watched is not None and watched.error is not None else error
        if isinstance(cause, OSError) and cause.errno in NO_ROOM and not isinstance(error, DiskWriteError):
            raise disk_write_error(path, cause) from error
        raise


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    atomic_write(path, lambda f: f.write(data), durable)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file (blank lines skipped); a bad line is an error naming file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
    return records
