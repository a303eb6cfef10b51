"""The pretrained tiny zoo: a vision tower, an LLM and a tokenizer that know the shapes world.

LLaVA starts from CLIP and Vicuna; deco's embedded default starts from `deco/zoo/tiny/` (safetensors +
`manifest.json`), made by `python -m deco.zoo` from nothing but the shapes world. Configs name its parts
as `zoo:tiny/vision`, `zoo:tiny/llm` and `zoo:tiny/tokenizer`; `resolve` turns such a name into the
directory inside the installed package, so checkpoints that record it keep loading wherever deco lives.
This module imports nothing heavy: model and data code call `resolve` on every `name_or_path`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_ROOT = Path(__file__).resolve().parent
PREFIX = "zoo:"


def resolve(name_or_path: Any) -> Any:
    """`zoo:<name>/<part>` -> the absolute directory in the package (it must exist); anything else unchanged."""
    if not isinstance(name_or_path, str) or not name_or_path.startswith(PREFIX):
        return name_or_path
    rel = name_or_path[len(PREFIX):].strip("/")
    path = ZOO_ROOT / rel
    if not rel or ".." in Path(rel).parts or not path.is_dir():
        available = sorted(f"{PREFIX}{p.parent.name}/{p.name}" for p in ZOO_ROOT.glob("*/*") if p.is_dir())
        raise FileNotFoundError(
            f"{name_or_path!r} is not in deco's zoo ({ZOO_ROOT}); available: {', '.join(available) or 'none'}. "
            "Regenerate it with `python -m deco.zoo` (see docs/zoo.md)"
        )
    return str(path)


def load_manifest(name: str = "tiny") -> dict:
    """The zoo's manifest.json: recipe, config, git commit, seeds, metrics and a sha256 per file."""
    path = ZOO_ROOT / name / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"zoo manifest not found: {path}; regenerate the zoo with `python -m deco.zoo`")
    return json.loads(path.read_text())
