"""Checkpoints for the app tests: the explain tests' trained tiny run and a tiny llava-hf directory (cached)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for sub in ("explain", "models"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

from explain_helpers import trained_run  # noqa: E402
from test_loading_fixtures import write_llava_hf  # noqa: E402

_DIRS: dict[str, Path] = {}


def deco_ckpt() -> Path:
    """last.ckpt of a 3-step avgpool (q=16) training of the embedded tiny model."""
    return trained_run() / "checkpoints" / "last.ckpt"


def llava_hf_dir() -> Path:
    """A random tiny LlavaForConditionalGeneration saved as llava-hf ships (56 px, 4x4 patches)."""
    if "hf" not in _DIRS:
        _DIRS["hf"] = write_llava_hf(Path(tempfile.mkdtemp(prefix="deco-app-hf-")) / "llava-hf")
    return _DIRS["hf"]
