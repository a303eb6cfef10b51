"""Entry point: score a trained checkpoint on a benchmark.

    python -m deco.evaluate ckpt=outputs/train/.../checkpoints/last.ckpt benchmark=shapes_existence
    python -m deco.evaluate -m ckpt=a.ckpt,b.ckpt benchmark=shapes_attribute,shapes_grounding,pope

Loads the model with `deco.models.loading.load_model`, builds the benchmark from its config
(`configs/benchmark/<name>.yaml`, a `_target_` class in `deco.eval.benchmarks`), answers every
question with batched greedy decoding, and writes `predictions.jsonl` and `metrics.json` into the
run dir, logs the metrics to the configured loggers (CSV / W&B) and prints a table. Returns the
benchmark's headline metric so sweeps can compare runs. A rerun into the same run dir (or with
`resume_from=<predictions.jsonl>`) asks only the questions not answered yet, reusing only answers of the same
checkpoint bytes and settings; the run dir is locked as deco.train's is. A sweep names its run
dirs `<checkpoint>-<benchmark>` and ends with `summary.md` / `summary.csv` (checkpoints x benchmarks).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from deco.eval.tables import checkpoint_label, joint_table, read_summaries
from deco.lit.resume import RunDirBusy, RunDirLock
from deco.models.attention import IMPLEMENTATIONS, set_attention
from deco.utils.config import apply_reduction_or_exit, looks_like_path, reducer_or_exit
from deco.utils.io import atomic_write_text
from deco.utils.run_info import write_run_info

log = logging.getLogger(__name__)

if not OmegaConf.has_resolver("ckpt_name"):  # names sweep run dirs: ${ckpt_name:${ckpt}}-${benchmark.name}
    OmegaConf.register_new_resolver("ckpt_name", checkpoint_label)
if not OmegaConf.has_resolver("reduction_tag"):  # ... plus -<reducer><keep> when a reduction is on
    OmegaConf.register_new_resolver("reduction_tag", lambda name, keep: "" if name in (None, "none") else f"-{name}{keep}")


class SweepSummary(Callback):
    """At the end of a multirun: one table of every run's headline metric (summary.md, summary.csv)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summaries = read_summaries(sweep_dir)
        if not summaries:
            log.warning("sweep %s: no metrics.json found, no summary written", sweep_dir)
            return
        markdown, table = joint_table(summaries)
        atomic_write_text(sweep_dir / "summary.md", markdown)
        atomic_write_text(sweep_dir / "summary.csv", table)
        print(f"\n{markdown}\n(written to {sweep_dir / 'summary.md'} and summary.csv)")


def _init_distributed() -> int:
    """Under torchrun (WORLD_SIZE > 1) join the process group; returns this process's rank."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"Config error: device={name} but no CUDA device is available (use device=cpu or auto)")
    return torch.device(name)


def _dtype(name: str | None) -> torch.dtype | None:
    allowed = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name is None:
        return None
    if name not in allowed:
        raise SystemExit(f"Config error: dtype={name} is unknown; allowed: null, {', '.join(allowed)}")
    return allowed[name]


def _set_attention(model: torch.nn.Module, name: str | None) -> None:
    """Switch vision tower and LLM attention ("sdpa": about 2x faster batched generation than eager)."""
    if name is None:
        return
    if name not in IMPLEMENTATIONS:
        allowed = ", ".join(IMPLEMENTATIONS)
        raise SystemExit(f"Config error: attn_implementation={name} is unknown; allowed: null, {allowed}")
    set_attention(model, name)


def _reducer(cfg: DictConfig):
    """The configured training-free reducer (None for reduction=none); a bad setting is a config error."""
    section = cfg.get("reduction")
    return reducer_or_exit(OmegaConf.to_container(section, resolve=True) if section is not None else None)


def _validate(cfg: DictConfig) -> None:
    _reducer(cfg)
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise SystemExit("Config error: ckpt is required, e.g. ckpt=outputs/train/<run>/checkpoints/last.ckpt")
    if looks_like_path(str(cfg.ckpt)) and not Path(str(cfg.ckpt)).expanduser().exists():
        raise SystemExit(f"Config error: ckpt={cfg.ckpt}: no such file")  # anything else may be a hub name
    if "_target_" not in cfg.benchmark:
        raise SystemExit("Config error: benchmark has no _target_; "
                         "choose one with benchmark=<name> (configs/benchmark/)")
    if int(cfg.batch_size) < 1:
        raise SystemExit(f"Config error: batch_size={cfg.batch_size} must be >= 1")
    aspects = ("pad", "resize", "crop")
    if cfg.get("image_aspect") is not None and cfg.image_aspect not in aspects:
        raise SystemExit(f"Config error: image_aspect={cfg.image_aspect} is unknown; "
                         f"allowed: null, {', '.join(aspects)}")
    resume = cfg.get("resume_from")
    if resume is not None and not Path(str(resume)).expanduser().is_file():
        raise SystemExit(f"Config error: resume_from={resume}: no such predictions file")


def _efficiency(cfg: DictConfig, model, benchmark, loaded, template: str, image_aspect: str) -> dict | None:
    """Cost of one question (the first): deco.eval.efficiency.measure_efficiency; None when disabled."""
    from deco.eval.efficiency import measure_efficiency
    from deco.eval.runner import PromptDataset

    options = cfg.get("efficiency") or {}
    samples = benchmark.samples()
    if not options.get("enabled", True) or not samples:
        return None
    item = PromptDataset(samples[:1], [benchmark.prompt(samples[0])], loaded.tokenizer, loaded.image_processor,
                         template, image_aspect)[0]
    return measure_efficiency(model, item["input_ids"], item["pixel_values"],
                              decode_tokens=int(options.get("decode_tokens", 8)), repeats=int(options.get("repeats", 3)))


def _loggers(cfg: DictConfig, benchmark: str, tag: str) -> list:
    """Instantiate the configured Lightning loggers, with W&B names that fit an evaluation run."""
    entries = cfg.get("logger") or {}
    loggers = []
    for key, entry in entries.items():
        if entry is None:
            continue
        if "wandb" in key:
            # The shared W&B config names runs after the training config (projector, stage), which an
            # evaluation config does not have: name and tag the run after checkpoint and benchmark instead.
            with open_dict(entry):
                entry.name = f"eval-{tag}-{benchmark}"
                entry.tags = ["eval", benchmark, tag]
                entry.group = entry.get("group") or "eval"
        loggers.append(instantiate(entry))
    return loggers


def evaluate(cfg: DictConfig) -> float | None:
    _validate(cfg)
    rank = _init_distributed()
    output_dir = Path(cfg.paths.output_dir)
    lock = RunDirLock(output_dir)
    if rank == 0:  # as deco.train: two evaluations into one run dir would mix their predictions
        try:
            lock.acquire()
        except RunDirBusy as error:
            raise SystemExit(str(error)) from None
    try:
        return _evaluate(cfg, rank, output_dir)
    finally:
        lock.release()


def _evaluate(cfg: DictConfig, rank: int, output_dir: Path) -> float | None:
    from deco.eval.predictions import fingerprint
    from deco.eval.runner import evaluate_benchmark, format_table
    from deco.models.loading import load_model

    torch.manual_seed(int(cfg.seed))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    info = write_run_info(output_dir, resolved, OmegaConf.to_yaml(cfg, resolve=True)) if rank == 0 else {}

    benchmark = instantiate(cfg.benchmark)
    benchmark.samples()  # read the files now: a missing file, image or answer fails before the model loads
    if cfg.get("image_aspect") is not None:
        benchmark.use_image_aspect(str(cfg.image_aspect))  # e.g. grounding boxes under "crop": fail now
    load_options = cfg.get("load") or {}
    loaded = load_model(str(cfg.ckpt), base=load_options.get("base"), vision_tower=load_options.get("vision_tower"),
                        merge_lora=bool(load_options.get("merge_lora", True)), dtype=_dtype(cfg.get("dtype")),
                        trust_remote_code=bool(cfg.get("trust_remote_code", False)))
    device = _device(str(cfg.device))
    model = loaded.model.to(device)
    _set_attention(model, cfg.get("attn_implementation"))
    reducer = _reducer(cfg)
    apply_reduction_or_exit(model, reducer)
    tag = loaded.projector_tag
    log.info("evaluating %s (%s) on %s: %d questions", cfg.ckpt, tag, benchmark.name, len(benchmark.samples()))

    image_aspect = cfg.get("image_aspect") or loaded.config.get("image_aspect", "pad")
    # null: the template the checkpoint was finetuned with (e.g. the zoo's question-first vicuna_v1_qfirst)
    trained = (loaded.config.get("stage") or {}).get("template")
    template = cfg.template or (trained if trained and trained != "plain" else "vicuna_v1")
    # resumed answers must be this model's: the checkpoint's bytes and every setting that changes an answer
    model_id = fingerprint(cfg.ckpt, base=load_options.get("base"), vision_tower=load_options.get("vision_tower"),
                           merge_lora=bool(load_options.get("merge_lora", True)), dtype=cfg.get("dtype"),
                           max_new_tokens=cfg.get("max_new_tokens"), image_aspect=image_aspect)
    result = evaluate_benchmark(
        model, loaded.tokenizer, loaded.image_processor, benchmark,
        batch_size=int(cfg.batch_size), max_new_tokens=cfg.get("max_new_tokens"), template=template,
        image_aspect=image_aspect, num_workers=int(cfg.num_workers), device=device,
        predictions_path=output_dir / "predictions.jsonl", progress=bool(cfg.progress),
        resume_from=cfg.get("resume_from"), model_id=model_id,
    )
    summary = {
        "benchmark": result.benchmark,
        "family": result.family,
        "headline": result.headline,
        "ckpt": str(cfg.ckpt),
        "projector": tag,
        "metrics": result.metrics,
        "scoring": result.extra.get("scoring", {}),
        "image_aspect": image_aspect,
        "num_questions": result.num_questions,
        "resumed_answers": result.extra.get("resumed", 0),
        "model_fingerprint": model_id,
        "seconds": round(result.seconds, 3),
        "questions_per_s": round(result.questions_per_s, 3),
        "batch_size": int(cfg.batch_size),
        "reduction": reducer.describe() if reducer is not None else {"name": "none"},
        "efficiency": _efficiency(cfg, model, benchmark, loaded, template, image_aspect) if rank == 0 else None,
        "config_hash": info.get("config_hash"),
        "git_commit": info.get("git_commit"),
    }
    headline = result.metrics.get(result.headline)
    if rank != 0:  # every rank holds the reduced metrics; one writes and logs them
        return float(headline) if headline is not None else None
    atomic_write_text(output_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")

    flat = {f"eval/{result.benchmark}/{k}": float(v) for k, v in result.metrics.items() if not isinstance(v, str)}
    flat[f"eval/{result.benchmark}/questions_per_s"] = result.questions_per_s
    for key in ("kept_visual_tokens", "prefill_flops", "ttft_ms", "decode_ms_per_token", "kv_cache_bytes"):
        if summary["efficiency"]:
            flat[f"eval/{result.benchmark}/{key}"] = float(summary["efficiency"][key])
    for logger in _loggers(cfg, result.benchmark, tag):
        logger.log_hyperparams({"ckpt": str(cfg.ckpt), "projector": tag, "benchmark": result.benchmark})
        logger.log_metrics(flat, step=0)
        logger.finalize("success")

    cost = summary["efficiency"]
    cost_line = "" if not cost else (f"\nkept {cost['kept_visual_tokens']}/{cost['visual_tokens']} visual tokens, "
                                     f"prefill {cost['prefill_flops'] / 1e9:.3g} GFLOPs, TTFT {cost['ttft_ms']:.1f} ms, "
                                     f"decode {cost['decode_ms_per_token']:.2f} ms/token")
    print(f"\n{tag}  {cfg.ckpt}  reduction={summary['reduction']}\n{format_table([result])}{cost_line}\n")
    return float(headline) if headline is not None else None


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
