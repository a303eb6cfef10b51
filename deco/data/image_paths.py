"""Whether a record's image path may be read below its image root (no heavy imports: the LLaVA record checks run
it in a forked reader before transformers is imported; `deco.data.image` re-exports it)."""

from __future__ import annotations

import os


def image_path_problem(name: str, allow_absolute: bool = False) -> str | None:
    """Why the image path `name` (from a record) may not be read below its image root, or None.

    Lexical, so symlinks inside the root (a common way to lay out datasets) keep working.
    """
    if os.path.isabs(name) or name.startswith("~"):
        return None if allow_absolute else (f"absolute image path {name!r} (allow_absolute_paths=true to read it)")
    norm = os.path.normpath(name)
    if norm == ".." or norm.startswith(".." + os.sep):
        return f"image path {name!r} leaves image_root"
    return None
