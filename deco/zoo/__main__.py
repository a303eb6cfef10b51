"""Entry point: regenerate the pretrained tiny zoo (`python -m deco.zoo`, or `make zoo`).

Trains, on CPU and from the shapes world alone: the tokenizer (a BPE, seconds), the vision tower (dense
per-patch supervision, `deco.zoo.train_vision`) and the LLM (symbolic scenes, `deco.zoo.train_llm`), then
writes safetensors and `manifest.json` (recipe, git commit, seeds, metrics, sha256 per file) to
`deco/zoo/<name>/` or `out_dir`. `smoke=true` shrinks every stage to a few steps (the tests run it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from deco.zoo import ZOO_ROOT
from deco.zoo.manifest import write_manifest

log = logging.getLogger(__name__)
SMOKE = {"vision": {"steps": 3, "batch_size": 4, "eval_every": 3},
         "llm": {"steps": 3, "batch_size": 4, "eval_every": 3, "eval_questions": 4}}


def build_zoo(cfg: DictConfig) -> Path:
    from deco.data.image import load_image_processor
    from deco.models.build import build_mllm
    from deco.zoo.evaluate import shapes_accuracy
    from deco.zoo.tokenizer import train_tiny_tokenizer
    from deco.zoo.train_llm import symbolic_tokens, train_llm
    from deco.zoo.train_vision import train_vision

    if cfg.smoke:
        with open_dict(cfg):
            cfg.merge_with(SMOKE)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir) if cfg.out_dir else ZOO_ROOT / cfg.name
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tokenizer = train_tiny_tokenizer(model_max_length=int(model_cfg["tokenizer"]["model_max_length"]))
    model_cfg["tokenizer"]["name_or_path"] = None
    model = build_mllm(model_cfg, {"name": "linear"}, tokenizer)  # the projector is a placeholder here
    metrics, times = {}, {}

    start = time.monotonic()
    processor = load_image_processor(None, int(model_cfg["image_processor"]["image_size"]))
    metrics["vision"] = train_vision(model.vision, processor, {**cfg.vision, "seed": cfg.seed})
    times["vision_s"] = round(time.monotonic() - start, 1)

    llm_cfg = {**OmegaConf.to_container(cfg.llm), "seed": cfg.seed}

    def evaluate(step, symbolic):
        return shapes_accuracy(model, tokenizer, symbolic_tokens(symbolic, int(llm_cfg["eval_grid"])),
                               llm_cfg["template"], num=int(llm_cfg["eval_questions"]))

    start = time.monotonic()
    symbolic, metrics["llm"] = train_llm(model, tokenizer, llm_cfg, evaluate)
    times["llm_s"] = round(time.monotonic() - start, 1)

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    model.vision.model.save_pretrained(out / "vision", safe_serialization=True)
    model.llm.save_pretrained(out / "llm", safe_serialization=True)
    from safetensors.torch import save_file

    (out / "symbolic").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in symbolic.state_dict().items()}, out / "symbolic" / "model.safetensors")
    write_manifest(out, OmegaConf.to_container(cfg, resolve=True), metrics, times)
    return out


@hydra.main(version_base="1.3", config_path="../../configs", config_name="zoo")
def main(cfg: DictConfig) -> None:
    out = build_zoo(cfg)
    log.info("zoo written to %s", out)
    print(f"zoo written to {out}")


if __name__ == "__main__":
    main()
