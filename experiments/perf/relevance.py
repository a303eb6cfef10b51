"""Figure 5 — relevance cost: one R-GAE explanation (image + text) against one forward + backward of it.

`deco.explain.methods.explain(model, input, "rgae")` does a teacher-forced forward that keeps the LLM's and
the projector's attention maps, one backward of the summed target score, and the GAE propagation. The
reference is the cheapest thing that computes gradients for the same sequence: the model's loss on the same
input (labels = the target tokens) and `backward()`. Both run on the same model (eval mode, eager attention,
finetune-stage freezing), interleaved; the figure is the median over rounds of R-GAE / (forward + backward).
Goal: <= 2.5x. Skipped with a message when `deco.explain` does not offer `build_input` and `explain`.
"""

from __future__ import annotations

import torch

from experiments.perf.common import Bench, interleaved, paired_ratio, projector_configs, summary

GOAL = 2.5


def run(smoke: bool = False, repeats: int | None = None) -> dict:
    try:
        from deco.explain.inputs import build_input
        from deco.explain.methods import explain
    except ImportError as error:
        return {"figure": "relevance cost", "skipped": f"deco.explain API not available ({error})"}
    from deco.data.shapes import make_sample
    from deco.data.tokenizer import IGNORE_INDEX

    size = "smoke" if smoke else "tiny"
    repeats = repeats or (2 if smoke else 5)
    bench = Bench(size)
    scene, _, meta = make_sample(3, 0, tasks=("caption",), image_size=bench.image_size)
    inp = build_input(bench.tokenizer, bench.image_processor, scene.image, meta["answer"], question=meta["question"])
    ids = inp.input_ids[None]
    labels = inp.input_ids.masked_fill(~inp.target_mask, IGNORE_INDEX)[None]
    pixels = inp.pixel_values[None]
    rows = {}
    for label, cfg in projector_configs(size).items():
        model = bench.model(cfg).eval()

        def forward_backward(model=model):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, labels=labels).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        def rgae(model=model):
            return explain(model, inp, "rgae", tokenizer=bench.tokenizer)

        times = interleaved({"rgae": rgae, "forward_backward": forward_backward}, repeats=repeats)
        ratio = paired_ratio(times["rgae"], times["forward_backward"])
        rows[label] = {"rgae": summary(times["rgae"]), "forward_backward": summary(times["forward_backward"]),
                       "ratio": ratio, "meets_goal": ratio <= GOAL}
    return {"figure": "relevance cost", "size": size, "target_tokens": int(inp.target_mask.sum()),
            "seq_len_text": int(ids.shape[1]), "goal": f"<= {GOAL}", "projectors": rows,
            "ratio": max(r["ratio"] for r in rows.values()),
            "meets_goal": all(r["meets_goal"] for r in rows.values())}
