"""Figure 11 — a training step against transformers: deco's MLLM / `LlavaForConditionalGeneration`.

    python -m experiments.perf.hf_train tiny wide     # JSON, any sizes (smoke, tiny, wide)

The same weights on both sides (deco's llava-hf export read back by transformers, as in figure 7), the same
tower depth (the peer's vision tower cut after the selected layer, `vision_feature_layer=-1`), the same trainable
parts (finetune stage: projector + LLM, tower frozen on both), the same batch of shapes-world conversations
(transformers: the `<image>` placeholder repeated once per visual token, labels -100 there, right padding), the
same loss (token mean; checked equal before timing) and the same optimizer step (AdamW with deco's parameter
groups, gradient clipping at 1.0). Steps alternate in one process, one thread; the figure is the median of the
paired ratios deco / transformers (wall; CPU time beside it). Goal: <= 1.00 (no slower than the peer).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from experiments.perf.common import Bench, interleaved, make_optimizer, paired_ratio, summary, train_step_fn
from experiments.perf.hf_peer import PROJECTOR, load_peer

GOAL = 1.00
SETTINGS = {"smoke": (2, 3), "tiny": (8, 9), "wide": (2, 5)}  # size: (batch, repeats)


def hf_train_batch(batch: dict, image_id: int, q: int, pad_id: int) -> dict[str, torch.Tensor]:
    """The right-padded deco batch for llava-hf: each `<image>` repeated q times (label -100 there)."""
    rows, labels = [], []
    for ids, mask, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        n = int(mask.sum())
        ids, lab = ids[:n].tolist(), lab[:n].tolist()
        at = ids.index(image_id)
        rows.append(ids[:at] + [image_id] * q + ids[at + 1:])
        labels.append(lab[:at] + [-100] * q + lab[at + 1:])
    width = max(len(r) for r in rows)
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
           "labels": torch.full((len(rows), width), -100, dtype=torch.long),
           "pixel_values": batch["pixel_values"]}
    for i, (row, lab) in enumerate(zip(rows, labels)):
        out["input_ids"][i, :len(row)] = torch.tensor(row)
        out["attention_mask"][i, :len(row)] = 1
        out["labels"][i, :len(row)] = torch.tensor(lab)
    return out


def run_size(size: str, batch_size: int, repeats: int) -> dict:
    bench = Bench(size)
    model = bench.model(PROJECTOR).train()
    batch = bench.train_batch(batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        peer = load_peer(model, bench, Path(tmp) / "llava_hf").train()
    parts = getattr(peer, "model", peer)
    for p in parts.vision_tower.parameters():  # the finetune stage: the tower is frozen on both sides
        p.requires_grad_(False)
    hf_batch = hf_train_batch(batch, model.image_token_id, model.num_visual_tokens, bench.tokenizer.pad_token_id)
    with torch.no_grad():
        loss_deco = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}).loss
        loss_hf = peer(**hf_batch).loss
    opt_deco, _ = make_optimizer(model, bench.stage)
    opt_hf = torch.optim.AdamW([p for p in peer.parameters() if p.requires_grad], lr=float(bench.stage["lr"]))
    steps = {"deco": train_step_fn(model, batch, opt_deco, clip=1.0),
             "transformers": train_step_fn(peer, hf_batch, opt_hf, clip=1.0)}
    cpu: dict[str, list[float]] = {}
    times = interleaved(steps, repeats=repeats, cpu_times=cpu)
    ratio = paired_ratio(times["deco"], times["transformers"])
    trainable = {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in (("deco", model),
                                                                                          ("transformers", peer))}
    return {
        "size": size, "batch_size": batch_size, "visual_tokens": model.num_visual_tokens,
        "sequence_tokens": int(hf_batch["input_ids"].shape[1]),
        "tower_layers": model.vision.layers_used,
        "loss": {"deco": float(loss_deco), "transformers": float(loss_hf)},
        "loss_equal": bool(torch.allclose(loss_deco, loss_hf, atol=1e-5, rtol=1e-5)),
        "trainable_params": trainable,
        "times": {k: summary(v) for k, v in times.items()},
        "ratio": ratio, "cpu_ratio": paired_ratio(cpu["deco"], cpu["transformers"]),
        "goal": f"<= {GOAL:.2f}", "meets_goal": ratio <= GOAL,
    }


def run(smoke: bool = False, sizes: tuple[str, ...] | None = None) -> dict:
    sizes = sizes or (("smoke",) if smoke else ("tiny", "wide"))
    return {"figure": "training step vs transformers", "sizes": {s: run_size(s, *SETTINGS[s]) for s in sizes}}


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(1)
    print(json.dumps(run(sizes=tuple(sys.argv[1:]) or None), indent=2))
