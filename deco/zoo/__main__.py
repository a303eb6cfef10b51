"""Entry point: regenerate the pretrained tiny zoo (`python -m deco.zoo`, or `make zoo`).

Trains, on CPU and from the shapes world alone: the tokenizer (a BPE, seconds), the vision tower (dense
per-patch supervision, `deco.zoo.train_vision`) and the LLM (symbolic scenes, `deco.zoo.train_llm`), then
writes safetensors and `manifest.json` (recipe, git commit, seeds, metrics, sha256 per file) to
`deco/zoo/<name>/` or `out_dir`. `smoke=true` shrinks every stage to a few steps (the tests run it).
`parts=[llm]` retrains one part and keeps the other from `out_dir` (its recipe and metrics stay in the
manifest): the two parts are independent (seeded separately), so this equals a full run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from deco.zoo import ZOO_ROOT
from deco.zoo.manifest import write_manifest

log = logging.getLogger(__name__)
PARTS = ("vision", "llm")
SMOKE = {"vision": {"steps": 3, "batch_size": 4, "eval_every": 3},
         "llm": {"steps": 3, "batch_size": 4, "eval_every": 3, "eval_questions": 4}}


def build_zoo(cfg: DictConfig) -> Path:
    from deco.data.image import load_image_processor
    from deco.models.build import build_mllm
    from deco.zoo.tokenizer import train_tiny_tokenizer
    from deco.zoo.train_vision import train_vision

    if cfg.smoke:
        with open_dict(cfg):
            cfg.merge_with(SMOKE)
            for stage in cfg.llm.get("stages") or []:
                stage.merge_with(SMOKE["llm"])
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir) if cfg.out_dir else ZOO_ROOT / cfg.name
    parts = set(cfg.parts)
    if not parts or parts - set(PARTS):
        raise ValueError(f"parts={list(cfg.parts)}: choose among {list(PARTS)}")
    old = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else None
    if parts != set(PARTS) and old is None:
        raise FileNotFoundError(f"parts={sorted(parts)} keeps the other parts from {out}, which holds no zoo")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tokenizer = train_tiny_tokenizer(model_max_length=int(model_cfg["tokenizer"]["model_max_length"]))
    model_cfg["tokenizer"]["name_or_path"] = None
    # Seeded before the build: the initial weights of tower and LLM come from here (train_vision / train_llm
    # seed only their data and steps), so a regeneration, whole or one part, is the same zoo.
    torch.manual_seed(int(cfg.seed))
    model = build_mllm(model_cfg, {"name": "linear"}, tokenizer)  # the projector is a placeholder here
    config = OmegaConf.to_container(cfg, resolve=True)
    metrics, times = {}, {}

    if "vision" in parts:
        start = time.monotonic()
        processor = load_image_processor(None, int(model_cfg["image_processor"]["image_size"]))
        metrics["vision"] = train_vision(model.vision, processor, {**cfg.vision, "seed": cfg.seed})
        times["vision_s"] = round(time.monotonic() - start, 1)
        _save_vision(model, out)
    tokenizer.save_pretrained(out / "tokenizer")

    def save_llm(step, symbolic, curve):  # after every evaluation: a stopped run leaves a complete zoo
        _save_llm(model, symbolic, out)  # symbolic is None after a text-scene stage (deco.zoo.text_scene)
        _write(out, parts, config, {**metrics, "llm": curve}, times)

    if "llm" in parts:
        _pretrain_llm(model, tokenizer, cfg, metrics, times, save_llm, out, old)
    _write(out, parts, config, metrics, times)
    return out


def _write(out: Path, parts: set, config: dict, metrics: dict, times: dict) -> None:
    if parts != set(PARTS):  # read now, not at the start: another part may have finished meanwhile
        old = json.loads((out / "manifest.json").read_text())
        for part in set(PARTS) - parts:  # kept as they are: their recipe, metrics and times come along
            config[part], metrics[part] = old["config"][part], old["metrics"][part]
            times[f"{part}_s"] = old["times"].get(f"{part}_s")
    write_manifest(out, config, metrics, times)


def llm_stages(llm_cfg: dict, seed: int) -> list[dict]:
    """The LLM's schedule: stage 0 is `llm` itself; each entry of `llm.stages` continues the same LLM and
    embedder with its keys overriding `llm`'s, on fresh scenes (world seed + stage number, or + the stage's
    `world` where it names one: the scenes of an earlier stage, read again in another form)."""
    base = {k: v for k, v in llm_cfg.items() if k not in ("stages", "from_stage")}
    return [{**base, "seed": seed}] + [{**base, **dict(stage), "seed": seed + int(dict(stage).get("world", k))}
                                        for k, stage in enumerate(llm_cfg.get("stages") or [], start=1)]


def _pretrain_llm(model, tokenizer, cfg, metrics, times, on_eval, out: Path, old: dict | None):
    from deco.zoo.evaluate import TASK_SEED, shapes_accuracy
    from deco.zoo.text_scene import text_tokens
    from deco.zoo.train_llm import symbolic_tokens, train_llm

    stages = llm_stages(OmegaConf.to_container(cfg.llm), int(cfg.seed))
    first = int(cfg.llm.get("from_stage") or 0)
    if not 0 <= first < len(stages):
        raise ValueError(f"llm.from_stage={first}: the schedule has stages 0..{len(stages) - 1}")
    curve, symbolic, offset = [], None, sum(int(s["steps"]) for s in stages[:first])
    if first:  # resume: the earlier stages' weights and curve come from the zoo in out_dir
        symbolic = _load_llm(model, out, stages[0])
        curve = [r for r in (old or {}).get("metrics", {}).get("llm", []) if r.get("stage", 0) < first]
    start = time.monotonic()
    for k, stage in enumerate(stages[first:], start=first):
        def evaluate(step, emb, stage=stage):
            eval_seed = int(stage.get("eval_seed") or TASK_SEED)
            if stage.get("scene", "symbolic") == "text":  # one scene at a time: generate has no padding mask
                return shapes_accuracy(model, tokenizer, text_tokens(model.llm, tokenizer), stage["template"],
                                       num=int(stage["eval_questions"]), batch_size=1, seed=eval_seed)
            shuffle = stage.get("scene") == "shuffled"
            return shapes_accuracy(model, tokenizer, symbolic_tokens(emb, int(stage["eval_grid"]), shuffle),
                                   stage["template"], num=int(stage["eval_questions"]), seed=eval_seed)

        def relabel(stage_curve, k=k, offset=offset):
            return [{**r, "stage": k, "step": offset + r["step"]} for r in stage_curve]

        def save(step, emb, stage_curve, done=curve, relabel=relabel, text=stage.get("scene") == "text"):
            on_eval(step, None if text else emb, done + relabel(stage_curve))  # the manifest: the whole curve so far

        symbolic, stage_curve = train_llm(model, tokenizer, stage, evaluate, save, symbolic)
        curve, offset = curve + relabel(stage_curve), offset + int(stage["steps"])
    metrics["llm"] = curve
    earlier_s = ((old or {}).get("times", {}).get("llm_s") or 0) if first else 0  # the stages loaded, not rerun
    times["llm_s"] = round(earlier_s + time.monotonic() - start, 1)


def _load_llm(model, out: Path, first_stage: dict):
    from safetensors.torch import load_file

    from deco.zoo.train_llm import new_embedder

    text = not (out / "symbolic").is_dir()  # after text-scene stages (llm.scene=text) there is no embedder yet
    for part in ("llm",) if text else ("llm", "symbolic"):
        if not (out / part / "model.safetensors").is_file():
            raise FileNotFoundError(f"llm.from_stage > 0 continues the zoo in {out}, which has no {part}/model.safetensors")
    model.llm.load_state_dict(load_file(out / "llm" / "model.safetensors"))
    torch.manual_seed(int(first_stage["seed"]))  # the embedder the whole run would have made at stage 0
    symbolic = new_embedder(model.llm, first_stage)
    if not text:
        symbolic.load_state_dict(load_file(out / "symbolic" / "model.safetensors"))
    return symbolic


def _save_vision(model, out: Path) -> None:
    model.vision.model.save_pretrained(out / "vision", safe_serialization=True)


def _save_llm(model, symbolic, out: Path) -> None:
    from safetensors.torch import save_file

    model.llm.save_pretrained(out / "llm", safe_serialization=True)
    if symbolic is None:  # a text-scene LLM: an embedder left by an earlier zoo would not match it
        shutil.rmtree(out / "symbolic", ignore_errors=True)
        return
    (out / "symbolic").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in symbolic.state_dict().items()}, out / "symbolic" / "model.safetensors")


@hydra.main(version_base="1.3", config_path="../../configs", config_name="zoo")
def main(cfg: DictConfig) -> None:
    out = build_zoo(cfg)
    log.info("zoo written to %s", out)
    print(f"zoo written to {out}")


if __name__ == "__main__":
    main()
