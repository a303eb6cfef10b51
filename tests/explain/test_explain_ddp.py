"""Relevance export and scoring on 2 CPU processes (torchrun, gloo): merged outputs equal one process's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from explain_helpers import trained_run

from deco.explain.__main__ import run
from deco.explain.distributed import Shard
from deco.explain.export import load_relevance

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["device=cpu", "progress=false"]


def test_shards_are_disjoint_and_gather_restores_the_order():
    shards = [Shard(rank=r, world=3) for r in range(3)]
    owned = [[i for i in range(10) if s.mine(i)] for s in shards]
    assert sorted(sum(owned, [])) == list(range(10)) and owned[1] == [1, 4, 7]
    pairs = [((0, 4, 1), "b"), ((0, 4, 0), "a"), ((1, -1, 0), "c")]
    assert Shard().gather(pairs) == ["a", "b", "c"]  # one process: just the order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(overrides: list[str], run_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "deco.explain", *overrides, *FLAGS, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    ckpt = trained_run() / "checkpoints" / "last.ckpt"
    export = [f"ckpt={ckpt}", "data=shapes", "num_samples=5", "images=false", "method=[rgae,rawattn]"]
    score = [f"ckpt={ckpt}", "mode=score", "score.probes=[shapes]", "score.num_samples=3", "score.perturbation=false",
             "score.methods=[rgae,rawattn]"]
    for name, overrides in (("export", export), ("score", score)):
        run(compose_config("explain", [*overrides, *FLAGS], tmp_path / "one" / name))
        _torchrun(overrides, tmp_path / "two" / name)
    one, two = tmp_path / "one" / "export", tmp_path / "two" / "export"
    index = (one / "index.jsonl").read_text()
    assert (two / "index.jsonl").read_text() == index and len(index.splitlines()) == 5 * 2
    files = sorted(p.name for p in one.glob("relevance-*.pt"))
    assert len(files) == 10 and sorted(p.name for p in two.glob("relevance-*.pt")) == files
    for name in files:
        a, b = load_relevance(one / name), load_relevance(two / name)
        torch.testing.assert_close(b["r_t2i"], a["r_t2i"])
        torch.testing.assert_close(b["r_t2q_tokens"], a["r_t2q_tokens"])
    one, two = tmp_path / "one" / "score", tmp_path / "two" / "score"
    assert (two / "scores.csv").read_text() == (one / "scores.csv").read_text()
    assert (two / "comparison.md").read_text() == (one / "comparison.md").read_text()
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
