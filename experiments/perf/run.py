"""`make bench`: run the performance figures, write experiments/perf/results.json, print a table of ratios.

    python -m experiments.perf.run                       # all figures (a few minutes on 2 CPU cores)
    python -m experiments.perf.run --only overhead generation
    python -m experiments.perf.run --smoke --out /tmp/r.json   # tiny sizes, seconds (what the test runs)

Every figure is a ratio of two things measured in this one process, interleaved, with medians (see
common.py), so the numbers compare across machines better than the absolute times next to them. Figures:
1 overhead (Lightning step / bare step), 2 compression (step-time ratio vs FLOP ratio per projector),
3 parameters and peak memory, 4 batched generation, 5 R-GAE cost, 6 data loader (experiments/perf/bench_data.py,
when present), 7 batched generation against transformers' LlavaForConditionalGeneration (hf_peer.py), and gpu
(gpu.py at LLaVA-1.5-7B dimensions on a CUDA device; its CPU smoke mode otherwise).
A figure that fails is recorded with its error and the others still run; the exit status is then 1.
The figure registry is figures.py, the printed table results_table.py; this module is the CLI and the driver.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

from experiments.perf.figures import FIGURES, run_figure
from experiments.perf.results_table import table

DEFAULT_OUT = Path(__file__).with_name("results.json")
SMOKE_OUT = Path(__file__).with_name("results_smoke.json")


def machine() -> dict:
    from deco.utils.run_info import git_commit

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="deco performance figures (ratios measured side by side)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; checks the code paths only")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results JSON (default {DEFAULT_OUT}; with --smoke {SMOKE_OUT.name} next to it, so a "
        "smoke run never replaces the recorded results)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier on a small shared machine)"
    )
    parser.add_argument(
        "--generation-attn",
        nargs="+",
        default=["eager", "sdpa"],
        help="figure 4 variants: attention implementations (eager, sdpa) and/or as_built "
        "(what the model config says: sdpa)",
    )
    args = parser.parse_args(argv)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)  # in-process callers (the smoke test) get their setting back


def _run(args) -> int:
    if args.out is None:
        args.out = SMOKE_OUT if args.smoke else DEFAULT_OUT
    attn = tuple(None if a == "as_built" else a for a in args.generation_attn)
    results = {"smoke": args.smoke, "machine": machine(), "figures": {}, "seconds": {}}
    failed = False
    for name in args.only or FIGURES:
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            results["figures"][name] = run_figure(name, args.smoke, attn)
        except Exception as error:  # noqa: BLE001 - record it, run the other figures, exit 1 at the end
            traceback.print_exc()
            results["figures"][name] = {"error": f"{type(error).__name__}: {error}"}
            failed = True
        results["seconds"][name] = time.perf_counter() - start
        print(f"[bench] {name} done in {results['seconds'][name]:.0f} s", flush=True)
    from deco.utils.io import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(table(results))
    scale = results["figures"].get("llava_scale") or {}
    if "phases" in scale:  # figure 9: where its seconds go (wall and main-process CPU per phase)
        from experiments.perf.llava_scale import table as phase_table

        print("\nfigure 9, phases:\n" + phase_table(scale))
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
