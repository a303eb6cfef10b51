"""The arena's jobs and the commands of one job (pretrain -> finetune -> benchmarks -> curve).

A job is a projector at a token count and a seed; its run dirs are `<out>/<name>-q<q>-s<seed>-pretrain` (LLaVA's
stage 1: `experiment=shapes_pretrain`, projector only, captions) and `<out>/<name>-q<q>-s<seed>` (stage 2:
`experiment=shapes_finetune` from it). Every step leaves a marker (`done`, or the benchmark's metrics.json);
a step whose marker exists is skipped, so a rerun resumes (deco.train's `resume=auto` continues a stopped run).
Each projector's tuned setting comes from `configs/arena/<projector>.yaml` (`+arena=<projector>`); tuning
trials override it (`stage.projector_lr`, `projector.num_attention_heads`) and score on the validation world.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

# 576 tokens: no compression (linear, mlp2x_gelu); every other projector at 144 and 64.
FULL = ("linear", "mlp2x_gelu")
COMPRESSING = ("avgpool", "maxpool", "qformer", "cabstractor", "dabstractor", "pixelshuffle", "ldp", "ldpv2",
               "tokenpacker", "resampler")
PROJECTORS = FULL + COMPRESSING
ATTENTION = ("qformer", "resampler", "tokenpacker", "dabstractor")  # their budget adds heads
SEEDS = (42, 1, 2)
BENCHMARKS = ("shapes_existence", "shapes_attribute", "shapes_grounding", "shapes_caption")
CURVE_BENCHMARKS = BENCHMARKS[:3]
VALIDATION_SEED = 60_000  # tuning scores on this world; the benchmarks' questions are world 50000
BASE_PROJECTOR_LR = 2.0e-3  # shapes_pretrain's lr = shapes_finetune's projector lr
LR_SCALES = (0.5, 1.0, 2.0, 4.0)
HEADS = (None, 4)  # None: the projector's default (the Q-Former at width 64: one head)


@dataclass(frozen=True)
class Job:
    projector: str
    tokens: int
    seed: int
    overrides: tuple[str, ...] = ()  # a tuning trial's settings
    tag: str = ""  # a tuning trial's name suffix

    @property
    def name(self) -> str:
        return f"{self.projector}{self.tag}-q{self.tokens}-s{self.seed}"


def token_counts(projector: str, counts=(144, 64)) -> tuple[int, ...]:
    if projector not in PROJECTORS:
        raise ValueError(f"unknown arena projector {projector!r}; choose among {list(PROJECTORS)}")
    return (576,) if projector in FULL else tuple(counts)


def arena_jobs(projectors=PROJECTORS, counts=(144, 64), seeds=SEEDS) -> list[Job]:
    """Seed-major: every projector of a seed before the next seed (the table fills up evenly)."""
    return [Job(p, q, s) for s in seeds for p in projectors for q in token_counts(p, counts)]


def tuning_jobs(projectors=PROJECTORS, seed: int = 42, tokens: int = 64) -> list[Job]:
    """The declared budget, the same for all: projector lr x {0.5, 1, 2, 4}; attention projectors also x heads."""
    jobs = []
    for p in projectors:
        q = 576 if p in FULL else tokens
        for scale in LR_SCALES:
            for heads in HEADS if p in ATTENTION else (None,):
                over = [f"stage.projector_lr={BASE_PROJECTOR_LR * scale:g}"]
                tag = f"-lr{scale:g}"
                if heads is not None:
                    over.append(f"projector.num_attention_heads={heads}")
                    tag += f"-h{heads}"
                jobs.append(Job(p, q, seed, tuple(over), tag))
    return jobs


@dataclass
class Settings:
    out: Path
    steps: int = 800
    pretrain_steps: int = 200
    batch: int = 32
    curve: int = 100  # a checkpoint every N finetune steps, scored on CURVE_BENCHMARKS (0: none)
    validation: bool = False  # tuning: score on the validation world
    benchmarks: tuple[str, ...] = BENCHMARKS
    extra: tuple[str, ...] = ()  # to every deco.train call (e.g. the zoo's paths)
    eval_extra: tuple[str, ...] = ()  # to every deco.evaluate call (e.g. benchmark.limit=8)
    python: str = field(default_factory=lambda: sys.executable)


def _train(s: Settings, job: Job, run: Path, stage: list[str], steps: int, more: list[str]) -> list[str]:
    return [s.python, "-m", "deco.train", *stage, f"projector={job.projector}", f"query_num={job.tokens}",
            f"seed={job.seed}", f"+arena={job.projector}", *job.overrides, f"trainer.max_steps={steps}",
            f"data.batch_size={s.batch}", f"data.train.num_samples={steps * s.batch}", "logger=csv", "threads=1", f"hydra.run.dir={run}",
            *more, *s.extra]


def _evaluate(s: Settings, ckpt: Path, bench: str, out: Path) -> list[str]:
    val = [f"benchmark.seed={VALIDATION_SEED}"] if s.validation else []
    return [s.python, "-m", "deco.evaluate", f"ckpt={ckpt}", f"benchmark={bench}", *val, "threads=1",
            "progress=false", f"hydra.run.dir={out}", *s.eval_extra]


def curve_callback(run: Path, every: int) -> list[str]:
    if every <= 0:
        return []
    return ["+callbacks.curve._target_=lightning.pytorch.callbacks.ModelCheckpoint",
            f"+callbacks.curve.dirpath={run}/checkpoints/curve", f"+callbacks.curve.every_n_train_steps={every}",
            "+callbacks.curve.save_top_k=-1", "+callbacks.curve.filename='step{step}'",
            "+callbacks.curve.auto_insert_metric_name=false", "+callbacks.curve.mode=max"]


def training_steps(s: Settings, job: Job) -> list[tuple[Path, list[str]]]:
    """(marker, command) of the two training stages; a marker that exists means the step is done."""
    run = s.out / job.name
    pre = s.out / f"{job.name}-pretrain"
    return [(pre / "done", _train(s, job, pre, ["experiment=shapes_pretrain"], s.pretrain_steps, [])),
            (run / "done", _train(s, job, run, ["experiment=shapes_finetune", f"init_from={pre}/checkpoints/last.ckpt"],
                                  s.steps, curve_callback(run, s.curve)))]


def evaluation_steps(s: Settings, job: Job) -> list[tuple[Path, list[str]]]:
    """The benchmarks on the last checkpoint, then the curve's checkpoints (known once the finetune is done).

    A tuning trial scores its last checkpoint only: selection reads nothing else, and its curve checkpoints
    are kept for promote.py, which scores them on the benchmarks' questions if the trial is chosen."""
    run = s.out / job.name
    steps = [(run / "eval" / b / "metrics.json", _evaluate(s, run / "checkpoints" / "last.ckpt", b, run / "eval" / b))
             for b in s.benchmarks]
    if s.validation:
        return steps
    for ckpt in sorted((run / "checkpoints" / "curve").glob("step*.ckpt")):
        if ckpt.stem == f"step{s.steps}":
            continue  # the last checkpoint, scored above
        steps += [(run / "curve" / ckpt.stem / b / "metrics.json", _evaluate(s, ckpt, b, run / "curve" / ckpt.stem / b))
                  for b in CURVE_BENCHMARKS if b in s.benchmarks]
    return steps
