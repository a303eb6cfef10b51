"""The fault audit of issue #15, rerunnable: bad inputs, bad configs, kill -9 / SIGTERM trials, NaN gradients.

    python -m experiments.faults.audit                       # everything, ~10 min on 2 busy cores
    python -m experiments.faults.audit --only inputs configs # the quick parts
    python -m experiments.faults.audit --kills 3             # fewer kill trials

Prints one line per case (ok / FAIL and why) and the totals, and writes them to results.json next to
this file (--out to change). See README.md for what counts as handled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.faults.configs import BAD_CONFIGS, FAST

ROOT = Path(__file__).resolve().parents[2]
TO_WDS_REASONS = {"missing_image", "corrupt_image", "oversized_image", "extreme_aspect", "unsafe_path"}


def _add(results: list[dict], section: str, case: str, why: str, **extra) -> None:
    """Record one case and print it at once (a long run shows its progress)."""
    results.append({"case": case, "ok": not why, "why": why, **extra})
    print(f"{section:>8} {'ok  ' if not why else 'FAIL'} {case}" + (f": {why}" if why else ""), flush=True)


def _compose(overrides: list[str], run_dir: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_config

    return compose_config("train", overrides, run_dir)


# ------------------------------------------------------------------ bad inputs

def audit_inputs(work: Path) -> list[dict]:
    from deco.data.image import build_image_processor
    from deco.data.llava_json import LlavaJsonDataset
    from deco.data.to_wds import convert
    from deco.data.tokenizer import build_tiny_tokenizer
    from experiments.faults.corpus import build

    tok, proc = build_tiny_tokenizer(), build_image_processor(image_size=28)
    data = work / "inputs" / "data"
    kinds = build(data)
    good = [json.dumps({"id": f"good-{i}", "image": "img/good.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat shape is it?"}, {"from": "gpt", "value": "A circle."}]})
        for i in range(3)]
    results = []
    for kind, record, expected in kinds:
        line = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
        path = data / f"{kind}.jsonl"
        path.write_text("\n".join([good[0], line, good[1], good[2]]) + "\n", encoding="utf-8")
        rss, start, why = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter(), ""
        try:
            ds = LlavaJsonDataset(str(path), tokenizer=tok, image_processor=proc, template="vicuna_v1",
                                  max_length=128, image_aspect="pad")
            items = [ds[i] for i in range(len(ds))]
            ids = [it["id"] for it in items]
            counts = {k: v for k, v in ds.skips.counts().items() if v}
            finite = all(it["pixel_values"] is None or bool(torch.isfinite(it["pixel_values"]).all()) for it in items)
            if expected == "ok":
                if counts or not finite or not any(i not in {"good-0", "good-1", "good-2"} for i in ids):
                    why = f"expected to load, got skips {counts}"
            else:
                reason = expected.split(":", 1)[1]
                if counts != {reason: 1}:
                    why = f"expected one {reason} skip, got {counts}"
                elif set(ids) - {"good-0", "good-1", "good-2"}:
                    why = f"the bad sample was delivered: {ids}"
            if not why and expected != "ok" and expected.split(":", 1)[1] in TO_WDS_REASONS:
                index = convert(input=str(path), out_dir=str(work / "inputs" / "wds" / kind), shard_size=10,
                                progress=False, overwrite=True)
                if index["skipped"] != {expected.split(":", 1)[1]: 1}:
                    why = f"to_wds: expected one {expected} skip, got {index['skipped']}"
        except Exception as error:  # a crash is a failure of the audit case, not of the audit
            why = f"raised {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        seconds = time.perf_counter() - start
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        if not why and (seconds > 10 or grown_mb > 1024):
            why = f"took {seconds:.1f} s, peak memory +{grown_mb:.0f} MB"
        _add(results, "inputs", kind, why, expected=expected)
    return results


# ------------------------------------------------------------------ bad configs

def audit_configs(work: Path) -> list[dict]:
    from deco.train import train

    results = []
    for overrides, key in BAD_CONFIGS:
        run_dir = work / "configs" / str(len(results))
        start, why = time.perf_counter(), ""
        try:
            train(_compose([*FAST, *overrides], run_dir))
            why = "trained"
        except SystemExit as error:
            message = str(error.code)
            if key not in message:
                why = f"message does not name {key!r}: {message[:160]}"
            elif (run_dir / "checkpoints" / "last.ckpt").exists():
                why = "a checkpoint was written before the error"
        except Exception as error:
            message = str(error).splitlines()[0] if str(error) else ""
            why = "" if key in message else f"{type(error).__name__} not naming {key!r}: {message[:160]}"
        if not why and time.perf_counter() - start > 30:
            why = f"took {time.perf_counter() - start:.0f} s"
        _add(results, "configs", " ".join(overrides), why)
    return results


# ------------------------------------------------------------------ kill and resume

RUN = ["stage=finetune_lora", "query_num=16", "data.train.num_samples=16", "data.val.num_samples=8",
       "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "data.max_length=128",
       "trainer.max_steps=8", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "logger=none",
       "callbacks.last_checkpoint.every_n_train_steps=1"]


def _cli(run_dir: Path, extra: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "deco.train", *RUN, *extra, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _differ(a: dict, b: dict) -> list[str]:
    bad = [k for k in b["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    for key, s in b["optimizer_states"][0]["state"].items():
        bad += [f"adam {key}.{n}" for n in ("exp_avg", "exp_avg_sq")
                if not torch.equal(a["optimizer_states"][0]["state"][key][n], s[n])]
    return bad


def audit_kills(work: Path, trials: int, seed: int = 0) -> list[dict]:
    straight = work / "kills" / "straight"
    proc = _cli(straight)
    while not (straight / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
        time.sleep(0.05)
    first_save = time.perf_counter()
    if proc.wait() != 0:
        raise RuntimeError(f"uninterrupted run failed: {proc.stderr.read()[-2000:]}")
    span = time.perf_counter() - first_save  # kills land anywhere between the first save and the end
    reference, rng, results = _state(straight), random.Random(seed), []
    for trial in range(trials):
        run_dir = work / "kills" / f"trial{trial}"
        sig = signal.SIGTERM if trial % 3 == 2 else signal.SIGKILL  # 1 in 3 a preemption, else a hard kill
        proc = _cli(run_dir)
        while not (run_dir / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
            time.sleep(0.05)  # past start-up: the kill lands in training, validation or a save
        time.sleep(rng.uniform(0.0, 0.9 * span))
        proc.send_signal(sig)
        code = proc.wait()
        why = ""
        try:  # the resume runs in this process (one start-up less per trial)
            from deco.train import train

            train(_compose(RUN, run_dir))
        except BaseException as error:
            why = f"resume failed: {type(error).__name__}: {error}"
        if not why:
            state = _state(run_dir)
            diffs = _differ(state, reference)
            tmps = list((run_dir / "checkpoints").glob(".*.tmp"))
            if state["global_step"] != reference["global_step"] or diffs:
                why = f"step {state['global_step']}, {len(diffs)} tensors differ, e.g. {diffs[:2]}"
            elif tmps:
                why = f"orphan temp files left: {[p.name for p in tmps]}"
        _add(results, "kills", f"{signal.Signals(sig).name} trial {trial} (exit {code})", why)
    return results


# ------------------------------------------------------------------ NaN gradients

def audit_nan(work: Path) -> list[dict]:
    from deco.train import train

    inject = ["+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection", "+callbacks.inject.nan_grad_at_step=2",
              "trainer.max_steps=4", "callbacks.last_checkpoint.every_n_train_steps=1"]
    results = []
    for policy in ("stop", "skip"):
        run_dir, why = work / "nan" / policy, ""
        try:
            train(_compose([*FAST, *inject, f"fault.on_nan={policy}"], run_dir))
            if policy == "stop":
                why = "exited 0"
        except SystemExit as error:
            if policy == "skip":
                why = f"exited: {error.code}"
            elif "global step 2" not in str(error.code):
                why = f"message does not name the step: {error.code}"
        state = _state(run_dir)
        tensors = [v for v in state["state_dict"].values() if v.is_floating_point()]
        tensors += [t for s in state["optimizer_states"][0]["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]
        if not why and not all(bool(torch.isfinite(t).all()) for t in tensors):
            why = "last.ckpt holds NaN/inf"
        _add(results, "nan", f"on_nan={policy}", why)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["inputs", "configs", "kills", "nan"])
    parser.add_argument("--kills", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="deco-fault-audit-"))
    sections = {"inputs": lambda: audit_inputs(work), "configs": lambda: audit_configs(work),
                "kills": lambda: audit_kills(work, args.kills), "nan": lambda: audit_nan(work)}
    report = {}
    try:
        for name in args.only:
            rows = sections[name]()
            report[name] = {"handled": sum(r["ok"] for r in rows), "total": len(rows), "cases": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, section in report.items():
        print(f"{name}: {section['handled']}/{section['total']}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
