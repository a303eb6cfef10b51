"""Entry point: the relevance explorer in the browser, `python -m deco.app` (Hydra config `configs/app.yaml`).

    python -m deco.app ckpt=[runs/a/checkpoints/last.ckpt,runs/b/checkpoints/last.ckpt] port=7860
    python -m deco.app ckpt=path/to/llava-hf-dir method=gradcam vision_relevance=gae

Loads every checkpoint with `deco.models.loading.load_model` (or builds the embedded default when
ckpt=null), builds the page of `deco.app.ui` and serves it on host:port (127.0.0.1 unless `host=` or
`share=true` ask otherwise), with a queue of `workers` requests at a time (each model still answers one at a
time), uploads bounded by `max_upload_mb` and each request by `request_time_s`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from deco.explain.methods import METHODS
from deco.relevance.vit import VISION_RELEVANCE
from deco.utils import remote_code
from deco.utils.config import apply_reduction_or_exit, looks_like_path, reducer_or_exit

log = logging.getLogger(__name__)
UNTRAINED = ("no ckpt= given: this is the embedded default with an untrained projector, so its answers and maps "
             "mean nothing yet; start the app with ckpt=<run>/checkpoints/last.ckpt for a trained model")


def _ckpts(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]


def validate(cfg: DictConfig) -> None:
    reducer_or_exit(cfg.get("reduction"))
    for ckpt in _ckpts(cfg.ckpt):
        if looks_like_path(ckpt) and not Path(ckpt).expanduser().exists():
            raise SystemExit(f"Config error: ckpt={ckpt}: no such file")
    if cfg.method not in METHODS:
        raise SystemExit(f"Config error: method={cfg.method} is unknown; choose one of: {', '.join(METHODS)}")
    if cfg.vision_relevance not in VISION_RELEVANCE:
        raise SystemExit(f"Config error: vision_relevance={cfg.vision_relevance} is unknown; choose one of: "
                         f"{', '.join(VISION_RELEVANCE)}")
    if not 0 < int(cfg.port) < 65536:
        raise SystemExit(f"Config error: port={cfg.port} is not a TCP port (1..65535)")
    for key in ("max_new_tokens", "max_text_tokens", "max_upload_mb", "workers"):
        if int(cfg[key]) < 1:
            raise SystemExit(f"Config error: {key}={cfg[key]} must be >= 1")
    if not float(cfg.request_time_s) > 0:
        raise SystemExit(f"Config error: request_time_s={cfg.request_time_s} must be > 0 (seconds)")


def _embedded_default(cfg: DictConfig):
    from deco.data.image import load_image_processor
    from deco.data.tokenizer import load_tokenizer
    from deco.models.build import build_mllm
    from deco.models.formats.common import LoadedModel

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    projector_cfg = OmegaConf.to_container(cfg.projector, resolve=True)
    with remote_code.allowed(bool(cfg.get("trust_remote_code", False))):
        tokenizer = load_tokenizer(**model_cfg["tokenizer"])
        torch.manual_seed(int(cfg.seed))
        model = build_mllm(model_cfg, projector_cfg, tokenizer).eval()
    log.warning("no ckpt= given: serving the embedded default (model=%s, projector=%s) as built from its "
                "configs; its projector is untrained, so give ckpt= for answers that mean something",
                model_cfg.get("name"), projector_cfg["name"])
    config = {"model": model_cfg, "projector": projector_cfg, "stage": {"template": "vicuna_v1"},
              "image_aspect": "pad", "source": {"format": "embedded", "path": None}}
    return LoadedModel(model, tokenizer, load_image_processor(**model_cfg["image_processor"]), config)


def load_slots(cfg: DictConfig) -> list:
    from deco.app.session import Slot
    from deco.models.loading import load_model

    name = str(cfg.device)
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)
    slots = []
    for ckpt in _ckpts(cfg.ckpt) or [None]:
        note = ""
        if ckpt is None:
            loaded, label = _embedded_default(cfg), "embedded default"
            note = UNTRAINED
        else:
            loaded = load_model(ckpt, base=cfg.load.base, vision_tower=cfg.load.vision_tower,
                                merge_lora=bool(cfg.load.merge_lora),
                                trust_remote_code=bool(cfg.get("trust_remote_code", False)))
            label = Path(ckpt).name
        loaded.model.to(device).eval()
        apply_reduction_or_exit(loaded.model, reducer_or_exit(cfg.get("reduction")))
        slots.append(Slot.of(loaded, f"{loaded.projector_tag} ({label})", cfg.template, cfg.image_aspect, note))
    return slots


def serve(cfg: DictConfig, block: bool = True):
    """Load, build and launch; returns the gr.Blocks (block=False: the server runs in a thread)."""
    from deco.app.ui import build_ui

    validate(cfg)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    slots = load_slots(cfg)
    demo = build_ui(slots, method=str(cfg.method), vision_relevance=str(cfg.vision_relevance),
                    question=str(cfg.question), max_new_tokens=int(cfg.max_new_tokens),
                    max_text_tokens=int(cfg.max_text_tokens), max_upload_bytes=int(cfg.max_upload_mb) * 2**20,
                    time_limit=float(cfg.request_time_s), workers=int(cfg.workers))
    if cfg.host != "127.0.0.1" or cfg.share:
        log.warning("serving beyond this machine (host=%s, share=%s): anyone who can reach it can run the models",
                    cfg.host, cfg.share)
    demo.queue(max_size=int(cfg.max_queue), default_concurrency_limit=1)
    print(f"deco.app: {len(slots)} model(s) on http://{cfg.host}:{cfg.port}", flush=True)
    demo.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=bool(cfg.share), ssr_mode=False,
                prevent_thread_lock=not block, show_error=True, footer_links=[],
                max_file_size=int(cfg.max_upload_mb) * 2**20)  # Gradio refuses bigger uploads (413)
    return demo


@hydra.main(version_base="1.3", config_path="../../configs", config_name="app")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
