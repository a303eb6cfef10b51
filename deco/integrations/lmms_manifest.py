"""The entry point lmms-eval reads (`lmms_eval.models` group in setup.cfg): where the `deco` model class lives.

Kept apart from the adapter so that lmms-eval can list models without importing deco's loaders.
"""

from __future__ import annotations

import importlib
import sys
import types


def _filelock_compat() -> None:
    """lmms-eval 0.7.3's evaluator imports `filelock._api` (filelock 3.x); filelock 4 keeps the same two
    classes in `filelock._core`. Give it that module so its lock patch runs instead of failing the run."""
    try:
        importlib.import_module("filelock._api")
    except ImportError:
        from filelock._core._lock import BaseFileLock
        from filelock._core._singleton import FileLockMeta

        shim = types.ModuleType("filelock._api")
        shim.BaseFileLock, shim.FileLockMeta = BaseFileLock, FileLockMeta
        sys.modules["filelock._api"] = shim


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    _filelock_compat()
    return ModelManifest(model_id="deco", simple_class_path="deco.integrations.lmms_eval.DecoLMM")
