"""Reader for LLaVA LoRA checkpoints (LLaVA-1.5 `*-lora` and the DeCo paper's `*-avgpool2_144-lora`).

Layout (LLaVA train.py with `lora_enable`): config.json (the LLaVA config, `mm_projector_type` included),
adapter_config.json + adapter_model.safetensors|bin (peft LoRA on the LLM's Linear layers, keys
`base_model.model.model.layers.*.lora_{A,B}.weight`), and non_lora_trainables.bin (the projector, keys
`base_model.model.model.mm_projector.*`). The base model (a Vicuna/Llama directory, or a LLaVA one) comes
from `base=` (`load.base=` on the command line), else the adapter's `base_model_name_or_path`, else the
config's `model_base` / `_name_or_path`. As in LLaVA's builder, the LLM is built from the LoRA directory's
config, the base weights loaded, the projector taken from non_lora_trainables.bin, and the adapter either
merged into the weights (`merge_lora=True`, peft `merge_and_unload`) or kept as a peft adapter.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from deco.models.formats.common import (
    LoadedModel,
    load_part,
    load_state_file,
    load_weights_dir,
    merge_reports,
    read_json,
)
from deco.models.formats.llava_original import (
    build_llm_from_config,
    build_vision,
    check_supported,
    finish,
    grow_vocab,
    has_tokenizer,
    image_processor_for,
    llava_parts,
    llm_config_of,
    load_projector,
    projector_config_of,
    resolve_local,
    split_llava_state,
    tied_keys,
)
from deco.models.mllm import MLLM

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA = "non_lora_trainables.bin"


def is_lora_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def base_model_of(path: Path, cfg: dict, adapter_cfg: dict, base: str | None) -> str:
    for source, value in (
        ("load.base", base),
        ("adapter_config.json base_model_name_or_path", adapter_cfg.get("base_model_name_or_path")),
        ("config.json model_base", cfg.get("model_base")),
        ("config.json _name_or_path", cfg.get("_name_or_path")),
    ):
        if value:
            log.info("LoRA base model from %s: %s", source, value)
            return str(value)
    raise ValueError(
        f"{path} is a LoRA checkpoint but names no base model (adapter_config.json base_model_name_or_path, "
        "config.json model_base/_name_or_path are empty); pass it as load.base=<dir or hub id>"
    )


def non_lora_state(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    """non_lora_trainables.bin with LLaVA's builder renaming: strip `base_model.`, then one `model.`."""
    file = path / NON_LORA
    if not file.is_file():
        return {}
    state = load_state_file(file, map_location)
    out = {}
    for key, value in state.items():
        key = key.removeprefix("base_model.")
        if key.startswith("model.model."):
            key = key[len("model."):]
        out[key] = value
    return out


def adapter_state(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    for name in ADAPTER_FILES:
        if (path / name).is_file():
            return load_state_file(path / name, map_location)
    raise FileNotFoundError(f"{path} has adapter_config.json but no adapter weights ({' or '.join(ADAPTER_FILES)})")


def attach_lora(llm, path: Path, adapter_cfg: dict, map_location: str, merge: bool):
    """peft LoRA from `path` on `llm`; every adapter weight must land. Returns (llm, report)."""
    from peft import LoraConfig, set_peft_model_state_dict

    from deco.models.llm import peft_model as wrap

    if adapter_cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}/adapter_config.json: peft_type={adapter_cfg.get('peft_type')} is not supported (LORA only)")
    lora_config = LoraConfig.from_pretrained(str(path))
    lora_config.inference_mode = True
    with warnings.catch_warnings():  # peft warns that the base model's name changed: we load it by path
        warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
        peft_model = wrap(llm, lora_config)
    state = adapter_state(path, map_location)
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = sorted(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(
            f"{path}: {len(unexpected)} adapter weights match no LoRA module of the base model: "
            + ", ".join(unexpected[:20])
        )
    missing = sorted(k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k)
    if missing:
        raise ValueError(f"{path}: the adapter has no weights for {len(missing)} LoRA parameters: " + ", ".join(missing[:20]))
    if merge:
        return peft_model.merge_and_unload(), {"unused": [], "missing": []}
    return peft_model, {"unused": [], "missing": []}


def load_llava_lora(
    path: str | Path,
    *,
    base: str | None = None,
    vision_tower: str | None = None,
    merge_lora: bool = True,
    map_location: str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a LLaVA/DeCo LoRA directory on top of its base model."""
    from deco.data.tokenizer import IMAGE_TOKEN, load_tokenizer

    path = Path(path)
    adapter_cfg = read_json(path / "adapter_config.json")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has adapter_config.json but no config.json (the LLaVA config with mm_projector_type); "
            "LLaVA LoRA checkpoints save both"
        )
    cfg = read_json(path / "config.json")
    check_supported(cfg, path)
    base_name = base_model_of(path, cfg, adapter_cfg, base)
    base_dir = resolve_local(base_name, "LoRA base model")

    tower, tower_name = build_vision(cfg, vision_tower, path)
    _, base_projector, base_llm, _ = split_llava_state(load_weights_dir(base_dir, map_location))
    _, lora_projector, lora_llm, _ = split_llava_state(non_lora_state(path, map_location))
    projector_state = lora_projector or base_projector
    if not lora_projector and base_projector:
        log.warning("%s: no projector in %s; using the base model's", path, NON_LORA)
    llm_state = {**base_llm, **lora_llm}  # other non-LoRA trainables (if any) override the base

    llm = build_llm_from_config(llm_config_of(cfg), dtype)
    llm_report = load_part(llm, llm_state, "llm", allow_missing=tied_keys(llm))
    llm, lora_report = attach_lora(llm, path, adapter_cfg, map_location, merge_lora)
    projector_cfg = projector_config_of(cfg, projector_state)
    projector, projector_report = load_projector(projector_cfg, projector_state, tower, llm, str(path))

    tokenizer_dir = path if has_tokenizer(path) else base_dir
    tokenizer = load_tokenizer(str(tokenizer_dir), model_max_length=int(cfg.get("tokenizer_model_max_length", 2048)))
    grow_vocab(llm.get_base_model() if hasattr(llm, "get_base_model") else llm, tokenizer)
    model = MLLM(tower, projector.to(llm.dtype), llm, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    image_processor, processor_path = image_processor_for(resolve_local(tower_name, "vision tower"), tower)
    parts = llava_parts(cfg, path, "llava_lora", tower_name, processor_path, projector_cfg, llm_path=str(base_dir))
    parts["model"]["tokenizer"]["name_or_path"] = str(tokenizer_dir)
    parts["model"]["base"] = str(base_dir)
    parts["stage"]["lora"] = {"enabled": not merge_lora, "merged": merge_lora, "r": adapter_cfg.get("r"),
                              "alpha": adapter_cfg.get("lora_alpha")}
    return finish(model, tokenizer, image_processor, parts, merge_reports(llm_report, lora_report, projector_report))
