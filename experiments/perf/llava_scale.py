"""Figure 9 — `data=llava_json` at LLaVA scale: time to the first step and peak main-process memory.

    python -m experiments.perf.llava_scale            # a generated 665k-record file (~190 MB), ~1 min
    python -m experiments.perf.llava_scale --smoke    # 5k records, seconds

A file shaped like `llava_v1_5_mix665k.json` is generated (a JSON array; 95 % of the records with an image
among 1,000 small JPEGs, one to four question/answer pairs, ~290 bytes per record), then `python -m deco.train
data=llava_json` runs as a subprocess until its first optimizer step ends. Measured: seconds from the
subprocess's start to the end of step 1 (imports, model build, reading the file for both splits, workers
started, one step), and the main process's peak resident memory (ru_maxrss) at that moment. Goals: <= 10 s and
<= 1 GiB. The machine's load average is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
GOAL_S, GOAL_BYTES = 10.0, 2**30
QUESTIONS = [
    "What colour is the {s}?",
    "Is there a {c} {s} in the image?",
    "What shape is the {c} object?",
    "Describe the image briefly.",
    "Where is the {c} {s}?",
    "How many objects are in the image?",
]
ANSWERS = [
    "The {s} is {c}.",
    "Yes, there is a {c} {s} near the middle of the image.",
    "It is a {s}.",
    "A small {c} {s}, a large {c} square and a medium circle.",
    "[0.12, 0.34, 0.56, 0.78]",
    "Three.",
]
SHAPES, COLOURS = ("circle", "square", "triangle"), ("red", "green", "blue", "yellow", "purple", "orange")


def generate(out: Path, num_records: int, num_images: int = 1000, seed: int = 0) -> Path:
    """Write `out/llava_like.json` and `out/coco/*.jpg`; returns the JSON path."""
    rng = random.Random(seed)
    (out / "coco").mkdir(parents=True, exist_ok=True)
    for k in range(num_images):
        Image.new("RGB", (64 + k % 7, 48), (k % 256, 80, 160)).save(out / "coco" / f"{k:012d}.jpg", quality=70)
    path = out / "llava_like.json"
    with path.open("w") as f:
        f.write("[")
        for k in range(num_records):
            turns = []
            for t in range(rng.choice((1, 1, 2, 3))):
                words = {"s": rng.choice(SHAPES), "c": rng.choice(COLOURS)}
                turns += [
                    {"from": "human", "value": rng.choice(QUESTIONS).format(**words)},
                    {"from": "gpt", "value": rng.choice(ANSWERS).format(**words)},
                ]
            record = {"id": f"{k:012d}", "conversations": turns}
            if rng.random() < 0.95:
                record["image"] = f"coco/{rng.randrange(num_images):012d}.jpg"
                turns[0]["value"] = "<image>\n" + turns[0]["value"]
            f.write(("," if k else "") + json.dumps(record))
        f.write("]\n")
    return path


def first_step(json_path: Path, run_dir: Path, *overrides: str, timeout: float = 600) -> dict:
    """Run `deco.train data=llava_json` (through `llava_phases`, which times its phases) and stop it after
    step 1: seconds from the subprocess's start to the end of that step, CPU seconds, peak RSS, phases."""
    probe = run_dir / "probe.json"
    cmd = [
        sys.executable,
        "-m",
        "experiments.perf.llava_phases",
        str(probe),
        "data=llava_json",
        f"data.json_path={json_path}",
        "trainer.max_steps=1",
        "data.batch_size=16",
        "data.num_workers=2",
        "logger=none",
        "threads=1",
        f"hydra.run.dir={run_dir}",
        "+callbacks.first._target_=experiments.perf.llava_scale.FirstStep",
        *overrides,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    load = os.getloadavg()
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if not probe.exists():
        raise RuntimeError(f"deco.train did not reach step 1 (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(probe.read_text())
    reading = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "llava_like.json" in line]
    reader = any("in a background process" in line for line in reading)
    return {
        "overrides": list(overrides),
        "background_reader": reader,
        "seconds_to_first_step": result["time"] - start,
        "cpu_s": result["process_cpu_s"] + result["reader_cpu_s"],
        "main_cpu_s": result["process_cpu_s"],
        "reader_cpu_s": result["reader_cpu_s"],
        "workers_cpu_s": result["workers_cpu_s"],
        "peak_rss_bytes": result["maxrss_bytes"],
        "load_average": [load, os.getloadavg()],
        "phases": phases(result, start),
        "reading_lines": reading[-3:],
    }


def phases(result: dict, start: float) -> list[dict]:
    """The timeline as rows {phase, wall_s, cpu_s}: the gaps between marks, with the timed spans inside them
    (nested spans are listed under theirs, indented)."""
    rows, last_w, last_c = [], start, 0.0
    rows.append(
        {
            "phase": "process start (python, before any import)",
            "wall_s": result["marks"][0][1] - start,
            "cpu_s": result["marks"][0][2],
        }
    )
    last_w, last_c = result["marks"][0][1], result["marks"][0][2]
    events = [(w, "mark", name, c) for name, w, c in result["marks"][1:]]
    events += [(w0, "span", (name, w1, c0, c1), None) for name, w0, w1, c0, c1 in result["spans"]]
    for w, kind, what, c in sorted(events, key=lambda e: e[0]):
        if kind == "mark":
            rows.append({"phase": f"-> {what}", "wall_s": w - last_w, "cpu_s": c - last_c})
            last_w, last_c = w, c
        else:
            name, w1, c0, c1 = what
            rows.append({"phase": f"   {name}", "wall_s": w1 - w, "cpu_s": c1 - c0})
    return rows


class FirstStep(L.Callback):
    """Marks the first batch's arrival; at the end of the first training batch writes the phases (through
    `llava_phases`), then stops the run."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from experiments.perf import llava_phases

        llava_phases.mark("fit until the first batch is ready")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from experiments.perf import llava_phases

        llava_phases.write_result("first step")
        trainer.should_stop = True


def run(smoke: bool = False) -> dict:
    """Figure 9: the default (`data.background_read: auto`), then both forced ways for comparison (a forked reader,
    `true`; the read in the main process, `false`); the goal is judged on the default."""
    n = 5000 if smoke else 665_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        json_path = generate(tmp / "data", n)
        gen_s = time.perf_counter() - start
        size = json_path.stat().st_size
        measured = first_step(json_path, tmp / "run")
        forced = {
            way: first_step(json_path, tmp / f"run_{way}", f"data.background_read={way}") for way in ("true", "false")
        }
    secs, rss = measured["seconds_to_first_step"], measured["peak_rss_bytes"]
    return {
        "figure": "llava_json at scale",
        "records": n,
        "file_bytes": size,
        "generate_s": gen_s,
        **measured,
        "background_read_forced": forced,
        "goal": f"<= {GOAL_S:.0f} s and <= {GOAL_BYTES / 2**30:.0f} GiB",
        "meets_goal": secs <= GOAL_S and rss <= GOAL_BYTES,
        "meets_time_goal": secs <= GOAL_S,
        "meets_memory_goal": rss <= GOAL_BYTES,
    }


def table(result: dict) -> str:
    """Each run's totals (wall, CPU of the main process and of the reader, peak RSS, load) and its phases."""
    lines, forced = [], result["background_read_forced"]
    chosen = "a background reader" if result["background_reader"] else "the read in the main process"
    runs = [
        (f"default (background_read=auto: {chosen})", result),
        ("background_read=true", forced["true"]),
        ("background_read=false", forced["false"]),
    ]
    for name, r in runs:
        load = " -> ".join(f"{x[0]:.1f}" for x in r["load_average"])
        lines.append(
            f"{name}: {r['seconds_to_first_step']:.1f} s wall to step 1; CPU {r['cpu_s']:.1f} s (main "
            f"{r['main_cpu_s']:.1f} + reader {r['reader_cpu_s']:.1f}; workers {r['workers_cpu_s']:.1f}); "
            f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB; load {load}"
        )
        lines += [f"  {p['phase']:<64} {p['wall_s']:6.2f} s wall {p['cpu_s']:6.2f} s CPU" for p in r["phases"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    result = run(smoke=parser.parse_args().smoke)
    print(table(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
