"""The zoo's manifest.json: what was trained, how, from which commit, and a sha256 for every file."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from deco.utils.io import atomic_write_text
from deco.zoo.evaluate import TASK_SEED


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_manifest(root: Path, config: dict, metrics: dict, times: dict) -> dict:
    held_out = (config.get("llm") or {}).get("eval_seed") or TASK_SEED  # where the LLM's held-out metrics come from
    manifest = {"recipe": "deco.zoo (docs/zoo.md)", "git_commit": git_commit(), "config": config,
                "seeds": {"world": config.get("seed"), "held_out_world": held_out}, "metrics": metrics,
                "times": times, "files": file_hashes(root)}
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(root: Path) -> list[str]:
    """Files whose sha256 differs from the manifest (or that are missing / not listed); [] when intact."""
    listed = json.loads((root / "manifest.json").read_text())["files"]
    actual = file_hashes(root)
    return sorted(f for f in set(listed) | set(actual) if listed.get(f) != actual.get(f))
