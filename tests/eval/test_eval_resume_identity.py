"""Resumed answers belong to this model, one evaluation per run dir, a torn UTF-8 line never blocks (issue 29, 4-5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import compose_config

from deco.eval.predictions import fingerprint, finished_answers, read_records
from deco.lit.resume import LOCK_NAME


def _evaluate(ckpt, run_dir):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", [f"ckpt={ckpt}", "benchmark.num_samples=4", "batch_size=4", "logger=none",
                                      "device=cpu", "progress=false"], run_dir)
    evaluate(cfg)
    return json.loads((run_dir / "metrics.json").read_text())


def test_another_checkpoint_in_the_same_run_dir_is_asked_again(tiny_ckpt, tmp_path):
    run_dir = tmp_path / "eval"
    first = _evaluate(tiny_ckpt, run_dir)
    assert first["resumed_answers"] == 0 and first["model_fingerprint"] == fingerprint(
        tiny_ckpt, base=None, vision_tower=None, merge_lora=True, dtype=None, max_new_tokens=None, image_aspect="pad")
    assert _evaluate(tiny_ckpt, run_dir)["resumed_answers"] == 4  # same checkpoint: nothing asked again
    # "last.ckpt changed": the same name, other weights
    changed = tmp_path / "other" / "checkpoints" / "last.ckpt"
    changed.parent.mkdir(parents=True)
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if "projector" in k and k.endswith("weight"))
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 1.0
    torch.save(checkpoint, changed)
    second = _evaluate(changed, run_dir)
    assert second["resumed_answers"] == 0 and second["model_fingerprint"] != first["model_fingerprint"]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["model"] for r in rows} == {second["model_fingerprint"]}


HOLD = """import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"pid %d (another evaluation)" % os.getpid(), 0)
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_evaluation_into_a_busy_run_dir_is_refused(tmp_path):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", ["ckpt=some/hub-model", "logger=none", "progress=false"], tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_NAME)], stdout=subprocess.PIPE,
                              text=True)  # POSIX locks are per process: another process holds it
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match=rf"run dir .* is in use by pid {holder.pid} \(another evaluation\)"):
            evaluate(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "predictions.jsonl").exists()


def test_answers_of_another_model_or_of_no_known_model_are_refused(tmp_path):
    path = tmp_path / "predictions.jsonl"
    rows = [{"id": 1, "prompt": "p1", "answer": "yes", "reference": "yes", "model": "A"},
            {"id": 2, "prompt": "p2", "answer": "no", "reference": "no", "model": "B"},
            {"id": 3, "prompt": "p3", "answer": "no", "reference": "no"}]  # written before answers named a model
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ([1, 2, 3], ["p1", "p2", "p3"], ["yes", "no", "no"])
    assert list(finished_answers(path, *args, model="A")) == ["1"]
    assert list(finished_answers(path, *args, model="C")) == []
    assert list(finished_answers(path, *args)) == ["1", "2", "3"]  # no identity asked for: as before


def test_a_torn_multibyte_character_drops_only_the_last_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = [{"id": k, "prompt": "p", "answer": "rouge é", "reference": "x"} for k in range(2)]
    torn = json.dumps({"id": 2, "prompt": "p", "answer": "日本"}, ensure_ascii=False).encode()
    cut = torn.index("日".encode()) + 1  # half of a 3-byte character, as a kill mid-write leaves it
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good).encode() + torn[:cut]
    path.write_bytes(data)
    assert [r["answer"] for r in read_records(path)] == ["rouge é", "rouge é"]
    assert list(finished_answers(path, [0, 1, 2], ["p"] * 3, ["x"] * 3)) == ["0", "1"]
