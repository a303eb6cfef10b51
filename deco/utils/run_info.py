"""What every run writes next to its results: the resolved config, the git commit and a config hash.

Two runs with the same config hash trained the same thing, which is what sweeps and reports
group by; the commit says which code did it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

from deco.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_hash(config: dict) -> str:
    """Stable short hash of a resolved config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def keep_previous(path: Path, new_text: str) -> Path | None:
    """If `path` exists with other content, rename it to `<stem>.previous-<k><suffix>` (k = 1, 2, ...)."""
    if not path.is_file() or path.read_text() == new_text:
        return None
    k = 1
    while (kept := path.with_name(f"{path.stem}.previous-{k}{path.suffix}")).exists():
        k += 1
    os.replace(path, kept)
    log.warning("%s differs from this run's config: the earlier one is kept as %s", path, kept.name)
    return kept


def write_run_info(output_dir: str | Path, config: dict, config_yaml: str) -> dict:
    """Write `config.yaml` (resolved) and `run_info.json` (commit, hash) into the run dir.

    A run dir that already holds a different config.yaml (a resume with changed settings) keeps it
    as `config.previous-<k>.yaml`: nothing a run wrote is overwritten silently.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    info = {"git_commit": git_commit(Path(__file__).parent), "config_hash": config_hash(config)}
    keep_previous(output_dir / "config.yaml", config_yaml)
    keep_previous(output_dir / "run_info.json", json.dumps(info, indent=2) + "\n")
    atomic_write_text(output_dir / "config.yaml", config_yaml)
    atomic_write_text(output_dir / "run_info.json", json.dumps(info, indent=2) + "\n")
    return info
