"""Entry point: relevance export and scoring, `python -m deco.explain` (Hydra config `configs/explain.yaml`).

    python -m deco.explain ckpt=<run>/checkpoints/last.ckpt image=photo.jpg text="A pot of green plants"
    python -m deco.explain -m ckpt=a.ckpt,b.ckpt method=rgae,rawattn,gradcam image=photo.jpg text="..."
    python -m deco.explain ckpt=... data=shapes num_samples=16 method=[rgae,rawattn]
    python -m deco.explain mode=score ckpt=[a.ckpt,b.ckpt,c.ckpt] score.num_samples=64
    torchrun --nproc_per_node=4 -m deco.explain ckpt=... data=shapes num_samples=1000   (one shard per rank)

`mode=export` writes, per checkpoint, method and input, `R_t2i-/R_t2q-/R_q2i-{method}-{text}-{projector}.png`
and `relevance-...pt` into the run dir (dataset mode: one set per sample, names prefixed with the sample
index, plus `index.jsonl`). `mode=score` scores the maps on shapes-world scenes against the named object's
box (energy in box, pointing game, perturbation AUCs; `benchmark=refcoco`: on RefCOCO's own images and
boxes) and writes `scores.csv`, `summary.json` and `comparison.md` (one row per checkpoint and method; two
checkpoints of one projector keep apart: their tags differ and every row names its checkpoint); its glue is
`deco.explain.score_cli`. The science lives in the other sibling modules, which import neither Hydra nor
Lightning; this file only composes, loads and loops.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deco.explain.distributed import Shard, from_environment, local_device
from deco.explain.score_cli import as_list as _as_list
from deco.explain.score_cli import progress as _progress
from deco.explain.score_cli import chosen_benchmark, score, write_scores
from deco.explain.score_cli import template as _template
from deco.explain.methods import METHODS
from deco.relevance.vit import VISION_RELEVANCE
from deco.utils.config import apply_reduction_or_exit, looks_like_path, reducer_or_exit
from deco.utils.io import atomic_write_text

log = logging.getLogger(__name__)
MODES = ("export", "score")
# Keys whose values are prose: commas, brackets and quotes in them are text, not Hydra grammar.
FREE_TEXT_KEYS = ("text", "question")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"Config error: device={name} but no CUDA device is available (use device=cpu or auto)")
    return torch.device(name)


def _reducer(cfg: DictConfig):
    section = cfg.get("reduction")
    return reducer_or_exit(OmegaConf.to_container(section, resolve=True) if section is not None else None)


def _validate(cfg: DictConfig) -> None:
    _reducer(cfg)
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise SystemExit("Config error: ckpt is required, e.g. ckpt=outputs/train/<run>/checkpoints/last.ckpt")
    for ckpt in _as_list(cfg.ckpt):
        if looks_like_path(ckpt) and not Path(ckpt).expanduser().exists():
            raise SystemExit(f"Config error: ckpt={ckpt}: no such file")  # anything else may be a hub name
    if cfg.mode not in MODES:
        raise SystemExit(f"Config error: mode={cfg.mode} is unknown; choose one of: {', '.join(MODES)}")
    methods = _as_list(cfg.method) + (_as_list(cfg.score.methods) if cfg.mode == "score" else [])
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SystemExit(f"Config error: method {bad or methods} is unknown; choose among: {', '.join(METHODS)}")
    if cfg.vision_relevance not in VISION_RELEVANCE:
        raise SystemExit(
            f"Config error: vision_relevance={cfg.vision_relevance} is unknown; choose one of: "
            f"{', '.join(VISION_RELEVANCE)}"
        )
    for key in ("max_queries", "ig_steps", "score.num_samples"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SystemExit(f"Config error: {key}={value} must be a whole number >= 1")
    if cfg.num_samples is not None and (not isinstance(cfg.num_samples, int) or cfg.num_samples < 1):
        raise SystemExit(f"Config error: num_samples={cfg.num_samples} must be >= 1, or null for every sample")
    if chosen_benchmark(cfg) is not None and cfg.mode != "score":
        raise SystemExit("Config error: benchmark=... scores relevance on its boxes: use it with mode=score")
    if cfg.mode == "export" and cfg.get("data") is None:
        if not cfg.image or not cfg.text:
            raise SystemExit('Config error: give image=<path> and text="..." (or data=<name> for dataset mode)')
        if not Path(str(cfg.image)).expanduser().is_file():
            raise SystemExit(f"Config error: image={cfg.image}: no such file")


def _dataset_inputs(cfg: DictConfig, loaded, template: str, keep=None):
    """(name slug prefix, ExplainInput) for the first num_samples items of data.<split> (`keep(i)`: this rank's)."""
    from deco.explain.inputs import input_from_item

    data = cfg.data
    if cfg.split not in data or data[cfg.split] is None:
        raise SystemExit(f"Config error: data config '{data.get('name')}' has no '{cfg.split}' split (split=...)")
    factory = instantiate(data[cfg.split])
    dataset = factory(
        tokenizer=loaded.tokenizer,
        image_processor=loaded.image_processor,
        template=template,
        max_length=data.get("max_length", 256),
        image_aspect=data.get("image_aspect", cfg.image_aspect),
    )
    total = len(dataset) if cfg.num_samples is None else min(int(cfg.num_samples), len(dataset))
    for i in range(total):
        if keep is not None and not keep(i):
            continue
        item = dataset[i]
        yield i, input_from_item(item, loaded.tokenizer, loaded.image_processor)


def _single_input(cfg: DictConfig, loaded, template: str, ckpt: str | None):
    """The image= / text= input; a text longer than the model reads is a config error, not a silent run."""
    from deco.data.conversation import SampleTooLong
    from deco.explain.inputs import build_input

    limits = [
        getattr(loaded.tokenizer, "model_max_length", None),
        getattr(getattr(getattr(loaded.model, "llm", None), "config", None), "max_position_embeddings", None),
    ]
    limits = [int(v) for v in limits if isinstance(v, int) and v < 10**8]  # "no limit" reads as ~1e30
    # the placeholder counts once in the text; the projector's q tokens take its place
    budget = min(limits) - (loaded.model.num_visual_tokens - 1) if limits else None
    try:
        return build_input(
            loaded.tokenizer,
            loaded.image_processor,
            str(Path(cfg.image).expanduser()),
            str(cfg.text),
            cfg.question,
            template,
            cfg.image_aspect,
            max_length=budget,
        )
    except SampleTooLong as error:
        raise SystemExit(
            f"Config error: text= with its question is too long for {ckpt or 'this model'}: {error} "
            f"(the text tokens it reads beside its {loaded.model.num_visual_tokens} visual tokens); "
            "shorten text= or question="
        ) from None


def export(
    cfg: DictConfig,
    loaded,
    out_dir: Path,
    tag: str | None = None,
    ckpt: str | None = None,
    compare: dict | None = None,
    shard: Shard | None = None,
) -> list[dict]:
    """Export mode for one loaded checkpoint; returns one record per written input. `tag`: the name in the
    files (default: the projector tag); `compare`: collects (tag, input, relevance) per method for the
    comparison figure (single-image mode); `shard`: this rank's share (dataset: its samples; one image: rank 0)."""
    from deco.explain.export import export_relevance, slugify
    from deco.explain.methods import explain_all

    shard = shard or Shard()
    methods = _as_list(cfg.method)
    template = _template(cfg, loaded)
    tag = tag or loaded.projector_tag
    kw = dict(tensor_format=cfg.tensor_format, images=bool(cfg.images), max_queries=int(cfg.max_queries))
    records = []
    if cfg.get("data") is None and not shard.is_main:
        inputs = []
    elif cfg.get("data") is None:
        inputs = [(None, _single_input(cfg, loaded, template, ckpt))]
    else:
        inputs = _dataset_inputs(cfg, loaded, template, keep=shard.mine)
        wrap = _progress(cfg, f"explain {tag}")
        inputs = wrap(list(inputs)) if wrap else inputs
    for index, inp in inputs:
        name = slugify(inp.text) if index is None else f"{index:05d}-{slugify(inp.text, 40)}"
        results = explain_all(
            loaded.model,
            inp,
            methods,
            loaded.tokenizer,
            per_token=bool(cfg.per_token),
            ig_steps=int(cfg.ig_steps),
            vision_relevance=str(cfg.vision_relevance),
        )
        for method, rel in results.items():
            files = export_relevance(rel, inp, out_dir, tag, name=name, **kw)
            records.append(
                {
                    "index": index,
                    "text": inp.text,
                    "method": method,
                    "projector": loaded.projector_tag,
                    "tag": tag,
                    "ckpt": ckpt,
                    "files": {k: p.name for k, p in files.items()},
                }
            )
            log.info("%s %s: %s", tag, method, ", ".join(p.name for p in files.values()))
            if compare is not None and index is None:
                compare.setdefault(method, []).append((tag, inp, rel))
    return records


def write_comparisons(compare: dict, out_dir: Path, cfg: DictConfig) -> list[Path]:
    """comparison-{method}-{text}.png: one row per checkpoint (deco.explain.compare), when there are two or more."""
    from deco.explain.compare import Row, render_comparison
    from deco.explain.export import slugify, tensor_dict
    from deco.explain.render import png_bytes
    from deco.utils.io import atomic_write_bytes

    written = []
    for method, entries in compare.items():
        if len(entries) < 2:
            continue
        rows = [
            Row.from_tensors(tag, {**tensor_dict(rel, inp.text, tag), "target_tokens": rel.target_tokens}, inp.image)
            for tag, inp, rel in entries
        ]
        inp = entries[0][1]
        picture = render_comparison(rows, inp.text, inp.question, method)
        path = out_dir / f"comparison-{method}-{slugify(inp.text)}.png"
        atomic_write_bytes(path, png_bytes(picture))
        log.info("comparison of %d checkpoints: %s", len(rows), path)
        written.append(path)
    return written


def run(cfg: DictConfig) -> dict:
    """Run one explain job; returns {"records": [...]} (export) or {"summary": [...], "table": str} (score).

    Under torchrun each rank explains its shard and rank 0 writes the merged index / tables (see
    deco.explain.distributed); the other ranks return {"records": [], "rank": r}.
    """
    _validate(cfg)
    shard = from_environment()  # torchrun: this rank's share; else rank 0 of 1
    try:
        return _run(cfg, shard)
    finally:
        shard.close()


def _keyed(ckpt_index: int, items: list[dict]) -> list[tuple]:
    """(single-process position, item): checkpoint, sample index, order within the sample."""
    return [((ckpt_index, -1 if r["index"] is None else r["index"], j), r) for j, r in enumerate(items)]


def _run(cfg: DictConfig, shard: Shard) -> dict:
    from deco.explain.export import unique_tag
    from deco.models.loading import load_model

    device = local_device(str(_device(str(cfg.device))))
    out_dir = Path(shard.broadcast(str(cfg.out_dir)))  # Hydra names run dirs by their start second
    out_dir.mkdir(parents=True, exist_ok=True)
    records, rows, compare = [], [], {}
    requested_aspect = cfg.image_aspect
    ckpts = _as_list(cfg.ckpt)
    used_tags: set[str] = set()
    for ckpt_index, ckpt in enumerate(ckpts):
        options = cfg.get("load") or {}
        loaded = load_model(
            ckpt,
            base=options.get("base"),
            vision_tower=options.get("vision_tower"),
            merge_lora=bool(options.get("merge_lora", True)),
            trust_remote_code=bool(cfg.get("trust_remote_code", False)),
        )
        loaded.model.to(device)
        apply_reduction_or_exit(loaded.model, _reducer(cfg))
        tag = unique_tag(loaded.projector_tag, ckpt, used_tags)  # two seeds of one projector: two names
        if tag != loaded.projector_tag:
            log.info(
                "%s: another checkpoint of this run is %s too; its files are named %s", ckpt, loaded.projector_tag, tag
            )
        # null: preprocess images as this checkpoint was trained
        cfg.image_aspect = requested_aspect or loaded.config.get("image_aspect", "pad")
        if cfg.mode == "export":
            records += _keyed(
                ckpt_index, export(cfg, loaded, out_dir, tag=tag, ckpt=ckpt, compare=compare, shard=shard)
            )
        else:
            rows += _keyed(ckpt_index, score(cfg, loaded, shard, tag=tag, ckpt=ckpt))  # one group per checkpoint
    records, rows = shard.gather(records), shard.gather(rows)  # rank 0: everything, in single-process order
    if not shard.is_main:
        return {"records": [], "rank": shard.rank}
    if cfg.mode == "export":
        atomic_write_text(out_dir / "index.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        return {"records": records, "comparisons": write_comparisons(compare, out_dir, cfg)}
    return write_scores(rows, out_dir)


@hydra.main(version_base="1.3", config_path="../../configs", config_name="explain")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    import sys

    from deco.utils.overrides import quote_free_text

    sys.argv = quote_free_text(sys.argv, FREE_TEXT_KEYS)  # text="Yes, it is red." works as typed
    main()
