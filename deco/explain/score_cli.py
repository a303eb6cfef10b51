"""The scoring side of `python -m deco.explain` (mode=score) and the small config helpers both modes share.

`score` turns one loaded checkpoint and the `score.*` settings into rows (`deco.explain.score.score_model`) on
the probe sets or on `benchmark=refcoco` (instantiated here, like `deco.evaluate` does); `write_scores` writes
`scores.csv`, `summary.json` and `comparison.md`. Config errors exit with a message naming the key.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from deco.explain.distributed import Shard
from deco.utils.io import atomic_write_text


def as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def progress(cfg: DictConfig, desc: str):
    if not cfg.progress:
        return None
    from deco.utils.progress import track  # a bar on a terminal, a line every 30 s in a log file

    return lambda items: track(items, desc)


def template(cfg: DictConfig, loaded) -> str:
    return cfg.template or (loaded.config.get("stage") or {}).get("template") or "vicuna_v1"


def chosen_benchmark(cfg: DictConfig):
    """The `benchmark=` group the user chose, or None: a node without `_target_` is only a preset's settings
    (debug=fast sets `benchmark.limit` for deco.evaluate), not a benchmark."""
    bench = cfg.get("benchmark")
    return bench if bench is not None and bench.get("_target_") is not None else None


def score(
    cfg: DictConfig, loaded, shard: Shard | None = None, tag: str | None = None, ckpt: str | None = None
) -> list[dict]:
    """Score rows of one checkpoint; `tag` (default: the projector tag) and the checkpoint's label name its rows."""
    from deco.explain.export import ckpt_label
    from deco.explain.probe_sets import collect_probes
    from deco.explain.score import score_model

    seed, benchmark = int(cfg.score.seed), None
    if cfg.get("data") is not None:
        split = cfg.data.get(cfg.split)
        if cfg.data.get("name") != "shapes" or split is None or chosen_benchmark(cfg) is not None:
            raise SystemExit(
                "Config error: mode=score needs ground-truth boxes: use data=shapes, "
                "benchmark=refcoco (refcoco_plus, refcocog), or neither"
            )
        seed = int(split.seed)
    try:
        if chosen_benchmark(cfg) is not None:
            benchmark = instantiate(cfg.benchmark)
        probes = collect_probes(
            loaded,
            template(cfg, loaded),
            as_list(cfg.score.get("probes", ["shapes"])),
            seed,
            int(cfg.score.num_samples),
            list(cfg.score.tasks),
            int(cfg.score.get("num_distractors", 64)),
            benchmark,
            str(cfg.image_aspect),
        )
    except (ValueError, FileNotFoundError) as error:
        where = f"benchmark={cfg.benchmark.get('name')}: " if benchmark is not None else ""
        raise SystemExit(f"Config error: {where}{error}") from None
    reference = [p.inp for p in probes]  # the causal test's mean tokens: over every probe, whatever the shard
    probes = [p for k, p in enumerate(probes) if (shard or Shard()).mine(k)]
    tag = tag or loaded.projector_tag
    return score_model(
        loaded.model,
        loaded.tokenizer,
        probes,
        as_list(cfg.score.methods),
        tag,
        perturbation=bool(cfg.score.perturbation),
        progress=progress(cfg, f"score {tag}"),
        vision_relevance=str(cfg.vision_relevance),
        checkpoint=ckpt_label(ckpt) if ckpt else "",
        causal=float(cfg.score.get("causal", 0.0) or 0.0),
        reference=reference,
    )


def _csv_text(rows: list[dict]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_scores(rows: list[dict], out_dir: Path) -> dict:
    """scores.csv, summary.json and comparison.md of the rows; returns {"summary": [...], "table": str}."""
    from deco.explain.summary import comparison_table, summarize

    summary = summarize(rows)
    table = comparison_table(summary)
    atomic_write_text(out_dir / "scores.csv", _csv_text(rows))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out_dir / "comparison.md", table + "\n")
    print(table)
    return {"summary": summary, "table": table}
