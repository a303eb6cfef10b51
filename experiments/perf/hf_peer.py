"""Figure 7 — batched generation against transformers: `MLLM.generate` / `LlavaForConditionalGeneration.generate`.

The same weights on both sides: a deco model with LLaVA-1.5's projector (mlp2x_gelu, 576 visual tokens) is
written with deco's llava-hf export (`save_llava_hf`) and read back by `LlavaForConditionalGeneration`.
Both answer the same left-padded batch of shapes-world questions (deco: one `<image>` placeholder per
prompt; llava-hf: the placeholder repeated 576 times, as `LlavaProcessor` writes it), greedy, no EOS, so
both decode exactly `max_new_tokens` tokens; SDPA attention on both (the configs' default), one thread.
Four sides run interleaved in one process: transformers configured as the fair peer (its static KV cache,
`cache_implementation="static"`, and its vision tower cut after the selected layer as deco's is), stock
transformers `generate` (dynamic cache; `over_stock_generate`), deco as it is (static KV cache, prefill chosen
per device), and deco's previous path (dynamic cache, one padded prefill call) for the before/after ratio.
The figure is the median over rounds of time(deco) / time(transformers) (wall clock; the same in process CPU
time is recorded beside it, which a shared machine's slow spells disturb less). Goal: <= 0.80.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch

from experiments.perf.common import Bench, interleaved, paired_ratio, summary

GOAL = 0.80
PROJECTOR = {"name": "mlp2x_gelu", "mlp_depth": 2}
# size: (batch, new tokens, repeats); wide is ~10x the tiny model's cost per sample
SETTINGS = {"smoke": (4, 3, 2), "tiny": (16, 16, 7), "wide": (8, 16, 5)}


def hf_batch(items: list[dict], image_id: int, q: int, pad_id: int) -> dict[str, torch.Tensor]:
    """llava-hf inputs: each prompt's `<image>` repeated q times, left-padded, plus the stacked pixels."""
    rows = []
    for item in items:
        ids = item["input_ids"].tolist()
        at = ids.index(image_id)
        rows.append(ids[:at] + [image_id] * q + ids[at + 1 :])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask,
            "pixel_values": torch.stack([item["pixel_values"] for item in items])}


def load_peer(model, bench: Bench, directory: Path, attn: str = "sdpa", same_depth: bool = True):
    """deco model -> llava-hf directory -> LlavaForConditionalGeneration (eval, `attn` attention).

    same_depth: the peer's vision tower stops where deco's does (its layers after the selected one removed,
    `vision_feature_layer=-1`: the same hidden state), so neither side runs a layer that feeds nothing.
    """
    from transformers import LlavaForConditionalGeneration

    from deco.models.formats.llava_hf import save_llava_hf

    save_llava_hf(model, bench.tokenizer, bench.image_processor, directory)
    if same_depth:  # a tower of `layers_used` layers whose last hidden state is the selected one
        config_file = Path(directory) / "config.json"
        config = json.loads(config_file.read_text())
        config["vision_config"]["num_hidden_layers"] = model.vision.layers_used
        config["vision_feature_layer"] = -1
        config_file.write_text(json.dumps(config))
    with warnings.catch_warnings(), _quiet_loading():
        warnings.simplefilter("ignore")  # the dropped layers' weights are reported as unused
        peer = LlavaForConditionalGeneration.from_pretrained(str(directory), attn_implementation=attn).eval()
    peer.generation_config.eos_token_id = None  # decode max_new_tokens tokens, like deco with eos_token_id=None
    return peer


def _quiet_loading():
    from transformers.utils import logging as hf_logging

    class Quiet:
        def __enter__(self):
            self.level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()

        def __exit__(self, *exc):
            hf_logging.set_verbosity(self.level)

    return Quiet()


def run_size(size: str, batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    from deco.data.collate import Collator

    from experiments.perf.generation import prompts

    bench = Bench(size)
    model = bench.model(PROJECTOR).eval()
    pad = bench.tokenizer.pad_token_id
    items = prompts(bench, batch_size)
    batch = Collator(pad, padding_side="left")(items)
    hf_inputs = hf_batch(items, model.image_token_id, model.num_visual_tokens, pad)

    def deco(cache="static", prefill="auto"):
        return model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                              max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=pad,
                              cache=cache, prefill=prefill)

    with tempfile.TemporaryDirectory() as tmp:
        peer = load_peer(model, bench, Path(tmp) / "llava_hf")

    def hf(cache="static"):  # the fair peer: transformers' own static KV cache (stock generate: dynamic)
        out = peer.generate(**hf_inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                            do_sample=False, pad_token_id=pad, cache_implementation=cache)
        return out[:, hf_inputs["input_ids"].shape[1] :]

    with torch.no_grad():
        tokens = {"deco": deco(), "deco_before": deco("dynamic", "batched"), "transformers": hf(),
                  "transformers_dynamic": hf("dynamic")}
        cpu: dict[str, list[float]] = {}
        times = interleaved({"transformers": hf, "deco": deco, "transformers_dynamic": lambda: hf("dynamic"),
                             "deco_before": lambda: deco("dynamic", "batched")}, repeats=repeats, cpu_times=cpu)
    ratio = paired_ratio(times["deco"], times["transformers"])
    rounds = [a / b for a, b in zip(times["deco"], times["transformers"])]
    return {
        "size": size,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "visual_tokens": model.num_visual_tokens,
        "prompt_tokens_max": int(hf_inputs["input_ids"].shape[1]),
        "prefill": "auto -> " + ("batched" if batch["input_ids"].is_cuda else "rows"),
        "times": {k: summary(v) for k, v in times.items()},
        "ratio_rounds": rounds,
        "before_ratio": paired_ratio(times["deco_before"], times["transformers"]),
        # the same ratios in process CPU time (one thread: what a contended machine's slow spells leave out)
        "cpu_ratio": paired_ratio(cpu["deco"], cpu["transformers"]),
        "cpu_before_ratio": paired_ratio(cpu["deco_before"], cpu["transformers"]),
        "over_stock_generate": paired_ratio(times["deco"], times["transformers_dynamic"]),
        "tokens_equal": {"deco_vs_transformers": torch.equal(tokens["deco"], tokens["transformers"]),
                         "deco_vs_transformers_dynamic": torch.equal(tokens["deco"], tokens["transformers_dynamic"]),
                         "deco_vs_before": torch.equal(tokens["deco"], tokens["deco_before"])},
        "ratio": ratio,
        "goal": f"<= {GOAL}",
        "meets_goal": ratio <= GOAL,
    }


def run(smoke: bool = False, sizes: tuple[str, ...] | None = None) -> dict:
    sizes = sizes or (("smoke",) if smoke else ("tiny", "wide"))
    return {"figure": "generation vs transformers", "attention": "sdpa",
            "sizes": {size: run_size(size, *SETTINGS[size]) for size in sizes}}


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(1)
    print(json.dumps(run(sizes=tuple(sys.argv[1:]) or None), indent=2))
