"""Run the projector study's training sweep in one process: for each seed, for each projector,
pretrain (projector only) then finetune from the pretrain's last.ckpt.

    python experiments/projector_study/sweep.py                      # the study as recorded
    python experiments/projector_study/sweep.py --seeds 1 --projectors avgpool:144 --out /tmp/x \
        --override trainer.max_steps=2

Runs are seed-major so that an interrupted sweep still holds complete seeds, and a run that
`<out>/sweep_status.jsonl` records as finished is skipped, so re-running the command resumes. Each run dir is
`<out>/<stage>/<projector>-q<tokens>-s<seed>/`, the layout `python -m deco.report` reads. The
same runs can be launched with Hydra's multirun (see the README); this script only saves the
Python start-up per run, which matters on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import traceback
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[2]
# The comparison that matters most (equal tokens) first; linear (576 tokens, the slowest) last.
DEFAULT_PROJECTORS = ["qformer:144", "avgpool:144", "qformer:64", "avgpool:64", "linear:576"]


def run_dir(out: Path, stage: str, projector: str, tokens: int, seed: int) -> Path:
    return out / stage / f"{projector}-q{tokens}-s{seed}"


def compose_run(experiment: str, overrides: list[str], output_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={experiment}", *overrides,
                                                        f"paths.output_dir={output_dir}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/projector_study/runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--projectors", nargs="+", default=DEFAULT_PROJECTORS,
                        help="name:tokens pairs, e.g. avgpool:144 (linear keeps all 576 patches)")
    parser.add_argument("--override", dest="overrides", action="append", default=[],
                        help="an extra Hydra override for both stages (repeatable), e.g. trainer.max_steps=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from deco.train import train

    status_path = args.out / "sweep_status.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    # Runs recorded as finished; an interrupted run also leaves a last.ckpt, so that is no proof.
    done = {r["run"] for r in map(json.loads, status_path.read_text().splitlines()) if r.get("ok")} \
        if status_path.exists() else set()
    failures = 0
    for seed in args.seeds:
        for spec in args.projectors:
            name, _, tokens = spec.partition(":")
            if not tokens.isdigit():
                raise SystemExit(f"--projectors entry {spec!r} must be name:tokens, e.g. avgpool:144")
            common = [f"projector={name}", f"query_num={tokens}", f"seed={seed}", *args.overrides]
            pre = run_dir(args.out, "pretrain", name, int(tokens), seed)
            fin = run_dir(args.out, "finetune", name, int(tokens), seed)
            for stage, out_dir, extra in (
                ("pretrain", pre, []),
                ("finetune", fin, [f"init_from={pre / 'checkpoints' / 'last.ckpt'}"]),
            ):
                if str(out_dir) in done:
                    continue
                experiment = "projector_study_pretrain" if stage == "pretrain" else "projector_study"
                start = time.time()
                try:
                    val_loss = train(compose_run(experiment, [*common, *extra], out_dir))
                    record = {"run": str(out_dir), "ok": True, "val_loss": val_loss}
                except Exception:  # keep going: one broken run must not lose the rest of the sweep
                    failures += 1
                    record = {"run": str(out_dir), "ok": False, "error": traceback.format_exc(limit=3)}
                record["wall_s"] = round(time.time() - start, 1)
                with status_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                logging.info("sweep: %s", record)
                if not record["ok"] and stage == "pretrain":
                    break
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
