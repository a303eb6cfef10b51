"""The zoo LLM's own order control: held-out accuracy reading exact scene grids in raster order and with every
scene's cells shuffled (issue 24). An LLM that read where things are from the token order loses grounding when the
order goes; one that reads it from each cell's position code does not.

    python -m experiments.zoo.order_control deco/zoo/tiny deco/zoo/tiny_shuffled [--grid 8] [--num 200]

Scores on the validation world (seed 1000) with deco.zoo.evaluate (the shapes benchmarks' scoring).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from deco.data.tokenizer import load_tokenizer
from deco.models.build import build_mllm
from deco.zoo import resolve
from deco.zoo.evaluate import shapes_accuracy
from deco.zoo.symbolic import SymbolicScene
from deco.zoo.train_llm import symbolic_tokens

MODEL_CFG = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.yaml"


def order_control(zoo: Path, grid: int = 8, num: int = 200, seed: int = 1000) -> dict[str, dict[str, float]]:
    """{"raster": scores, "shuffled": scores} of the zoo's LLM and embedder (zoo/llm, zoo/symbolic)."""
    if not (zoo / "symbolic" / "model.safetensors").is_file():
        raise FileNotFoundError(f"{zoo} has no symbolic/model.safetensors (a grid-reading zoo LLM is needed)")
    template = json.loads((zoo / "manifest.json").read_text())["config"]["llm"]["template"]  # what the LLM read
    cfg = OmegaConf.to_container(OmegaConf.load(MODEL_CFG))
    cfg["llm"]["name_or_path"] = str(zoo / "llm")
    tokenizer = load_tokenizer(resolve(cfg["tokenizer"]["name_or_path"]), cfg["tokenizer"]["model_max_length"])
    model = build_mllm(cfg, {"name": "linear"}, tokenizer).eval()  # the projector is unused: grids go in directly
    symbolic = SymbolicScene(model.llm.get_input_embeddings().embedding_dim)
    symbolic.load_state_dict(load_file(zoo / "symbolic" / "model.safetensors"))
    return {name: shapes_accuracy(model, tokenizer, symbolic_tokens(symbolic, grid, shuffle), template, num=num,
                                  seed=seed)
            for name, shuffle in (("raster", False), ("shuffled", True))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoos", nargs="+", type=Path)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--num", type=int, default=200, help="questions per task")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| zoo | order | existence | attribute | grounding Acc@0.5 |\n|---|---|---|---|---|")
    for zoo in args.zoos:
        for order, scores in order_control(zoo, args.grid, args.num).items():
            print(f"| {zoo} | {order} | " + " | ".join(f"{scores[t]:.1f}" for t in ("existence", "attribute", "grounding")) + " |")


if __name__ == "__main__":
    main()
