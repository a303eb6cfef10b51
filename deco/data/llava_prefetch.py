"""`data=llava_json`'s file read in a forked process while the run imports Lightning and builds its model.

Reading and checking a LLaVA-scale file (665k records) takes seconds of CPU, and so do the imports and the model
build that come before the datasets are made. `deco.train` enters `prefetching(cfg.data)` first: for a
`data=llava_json` config it forks a reader, which imports only light modules (`llava_records`,
`llava_record_checks`), reads the file as the train split will (same path, image root, checks: the same
`read_records` call) and writes the `Records` to a private temporary directory. When the dataset then reads the
file, `read_records` finds the result under the same key (path, size, mtime, options) and takes it, waiting for
the reader if it has not finished. Whenever anything differs or fails (another key, the file changed, the reader's
exit status, its result unreadable) the dataset reads the file itself as before, so errors are raised where and
as they were. On leaving `prefetching` a reader that is still running is killed and its files removed. Without
`os.fork` (Windows) nothing is prefetched.

`data.background_read`: true, false, or auto (default): a reader only when a core is free now (the 1-minute load
average at most the usable cores - 1). Measured on 2 cores (665k records, `experiments/perf/llava_scale.py`): at
load 7 a reader made the start slower (11.4-11.9 s against 9.5-9.6 s read in place; 9.7 s of CPU against 8.3:
the reader's write and the parent's copy-on-write page faults), so it pays only where a core would otherwise idle
(an idle 2-core box, or the many-core machines LLaVA-scale data is trained on).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LLAVA_DATASET = "deco.data.llava_json.LlavaJsonDataset"
_PENDING: dict[tuple, tuple[int, str]] = {}  # read key -> (reader pid, its private directory)


def wanted(value, cores: int | None = None, load: float | None = None) -> bool:
    """`data.background_read` -> whether to fork a reader: true / false as given; auto when a core is free
    (at least 2 usable cores, load average <= cores - 1). Other values: False (`validate_train_config` names the key)."""
    if value is True or value is False:
        return value
    if value != "auto":
        return False
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cores)
    return cores >= 2 and load <= cores - 1


def read_settings(data_cfg) -> tuple[Path, tuple] | None:
    """(path, options) that the train split of a `data=llava_json` config passes to `read_records` (the
    dataset's own rules: json_path expanded; image_root, else the file's folder, when check_images), or None
    (another dataset, no such file)."""
    train = data_cfg.get("train") if data_cfg is not None else None
    if train is None or train.get("_target_") != LLAVA_DATASET:
        return None
    path = Path(str(train.get("json_path"))).expanduser()
    if not path.is_file():
        return None
    root = train.get("image_root")
    image_root = Path(str(root)).expanduser() if root is not None else path.parent
    from deco.data.llava_record_checks import read_options

    allow = train.get("allow_absolute_paths", False)
    return path, read_options(allow, image_root if train.get("check_images", True) else None)


def _reader(path: Path, options: tuple, out_dir: str, parent: int) -> int:
    """In the forked child: read, write `records.pkl` atomically; the exit status."""
    from deco.data.llava_record_checks import readable_check
    from deco.data.llava_records import _read

    allow, root = options
    records = _read(path, readable_check(allow, None if root is None else Path(root)))
    part = os.path.join(out_dir, "records.part")
    with open(part, "wb") as f:
        pickle.dump((records.offsets, records.positions, records.skips, len(records.blob)), f, protocol=5)
        f.write(records.blob)
    if os.getppid() != parent:  # the run is gone: nobody will take it
        return 1
    os.replace(part, os.path.join(out_dir, "records.pkl"))
    return 0


def start(data_cfg) -> tuple | None:
    """Fork a reader for this data config (see the module doc); the key it reads under, or None."""
    if not hasattr(os, "fork"):
        return None
    try:
        settings = read_settings(data_cfg)
        if settings is None or not wanted(data_cfg.get("background_read", "auto")):
            return None
        from deco.data.llava_records import records_key

        path, options = settings
        key = records_key(path, options)
    except Exception:  # noqa: BLE001 - an incomplete or odd config: the dataset reports it when it is built
        return None
    if key in _PENDING:
        return None
    out_dir = tempfile.mkdtemp(prefix="deco-llava-read-")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the reader: never returns into the run
        status = 1
        try:
            _PENDING.clear()
            status = _reader(path, options, out_dir, parent)
        except BaseException as error:  # noqa: BLE001 - the run reads the file itself and reports it
            log.debug("background read of %s failed: %s", path, error)
        finally:
            os._exit(status)
    _PENDING[key] = (pid, out_dir)
    log.info("reading %s in a background process (pid %d) while the model is built", path.name, pid)
    return key


def collect(key: tuple):
    """The `Records` a reader made under `key` (waiting for it), or None (no reader, or it failed)."""
    from deco.data.llava_records import Records

    entry = _PENDING.pop(key, None)
    if entry is None:
        return None
    pid, out_dir = entry
    start_wait = time.monotonic()
    try:
        _, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.info("the background read failed: reading the file here")
            return None
        with open(os.path.join(out_dir, "records.pkl"), "rb") as f:
            offsets, positions, skips, size = pickle.load(f)  # our own file, in our own 0700 directory
            blob = bytearray(size)
            if f.readinto(blob) != size:
                return None
        log.info(
            "took the background read (it used %.1f s of CPU; waited %.1f s for it)",
            usage.ru_utime + usage.ru_stime,
            time.monotonic() - start_wait,
        )
        return Records(blob, offsets, positions, skips)
    except Exception as error:  # noqa: BLE001 - read it here instead
        log.info("the background read could not be taken (%s): reading the file here", error)
        return None
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def cancel(key: tuple) -> None:
    """Stop the reader of `key` if it still runs, and remove its files."""
    entry = _PENDING.pop(key, None)
    if entry is None:
        return
    pid, out_dir = entry
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    shutil.rmtree(out_dir, ignore_errors=True)


@contextmanager
def prefetching(data_cfg):
    """Start a reader for `data_cfg` (when it is a llava_json config) and clean up whatever was not taken."""
    key = start(data_cfg)
    try:
        yield key
    finally:
        if key is not None:
            cancel(key)
