"""Figure 4 — evaluation throughput: batched (16) vs one-at-a-time greedy generation with `MLLM.generate`.

Sixteen shapes-world questions (vicuna_v1 prompts with an image) are answered either in one left-padded
batch of 16 or as 16 batch-1 calls; no EOS, so every call decodes exactly `max_new_tokens` tokens and both
sides do the same work per sample. Rounds alternate the two sides; the figure is the median over rounds of
time(16 x batch 1) / time(batch 16), i.e. the throughput gain of batching. Goal: >= 4x on CPU.
Measured with eager attention (what explanation code needs for its maps) and with SDPA (the configs'
default, which `deco.evaluate` generates with): eager attention materialises b x heads x T x T probabilities, which at
batch 16 and 577 vision tokens leave the CPU caches and make the batched prefill slower per sample.
"""

from __future__ import annotations

import torch

from deco.models.attention import set_attention

from experiments.perf.common import Bench, interleaved, paired_ratio, projector_configs, summary

GOAL = 4.0


def prompts(bench: Bench, n: int) -> list[dict]:
    """n generation inputs: tokenized prompt (1D) + processed image."""
    from deco.data.conversation import tokenize_prompt
    from deco.data.shapes import make_sample

    out = []
    for i in range(n):
        scene, _, meta = make_sample(7, i, image_size=bench.image_size)
        from deco.data.image import process_image

        out.append({"input_ids": tokenize_prompt(meta["question"], bench.tokenizer, "vicuna_v1"),
                    "pixel_values": process_image(scene.image, bench.image_processor, "pad")})
    return out


def run(smoke: bool = False, batch_size: int = 16, max_new_tokens: int | None = None, repeats: int | None = None,
        projector: str = "avgpool", attn: str | None = None, llm_only: bool = False) -> dict:
    """Figure 4 for the model as `build_mllm` makes it (eager attention), or with `attn` switched.

    llm_only: the images are encoded once beforehand and both sides pass `image_tokens` (a diagnostic:
    what batching gains on the part it can speed up, the LLM's prefill and decoding).
    """
    from deco.data.collate import Collator

    size = "smoke" if smoke else "tiny"
    max_new_tokens = max_new_tokens or (4 if smoke else 16)
    repeats = repeats or (2 if smoke else 5)
    bench = Bench(size)
    label, cfg = next((k, v) for k, v in projector_configs(size).items() if k.startswith(projector))
    model = bench.model(cfg).eval()
    if attn is not None:
        set_attention(model, attn)
    items = prompts(bench, batch_size)
    collate = Collator(bench.tokenizer.pad_token_id, padding_side="left")
    batched = collate(items)
    singles = [collate([item]) for item in items]
    if llm_only:
        with torch.no_grad():
            for batch in [batched, *singles]:
                batch["image_tokens"] = model.encode_images(batch["pixel_values"])

    def generate(batch):
        return model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                              max_new_tokens=max_new_tokens, eos_token_id=None,
                              pad_token_id=bench.tokenizer.pad_token_id, image_tokens=batch.get("image_tokens"))

    def one_by_one():
        return [generate(b) for b in singles]

    # the batch must decode what the singles decode (left padding and position ids are right)
    with torch.no_grad():
        same = all(torch.equal(generate(batched)[i], generate(s)[0]) for i, s in enumerate(singles))
    times = interleaved({"batched": lambda: generate(batched), "one_by_one": one_by_one}, repeats=repeats)
    ratio = paired_ratio(times["one_by_one"], times["batched"])
    return {
        "figure": "batched generation",
        "size": size,
        "projector": label,
        "attention": attn or f"{model.llm.config._attn_implementation} (as built)",
        "llm_only": llm_only,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "prompt_tokens_max": int(batched["input_ids"].shape[1]) - 1 + model.num_visual_tokens,
        "batched": summary(times["batched"]),
        "one_by_one": summary(times["one_by_one"]),
        "batched_samples_per_s": batch_size / summary(times["batched"])["median_s"],
        "one_by_one_samples_per_s": batch_size / summary(times["one_by_one"])["median_s"],
        "batched_matches_one_by_one": same,
        "ratio": ratio,
        "goal": f">= {GOAL}",
        "meets_goal": ratio >= GOAL,
    }


def throughput(model, batch_size: int, prompt_len: int, max_new_tokens: int, repeats: int = 3) -> dict:
    """Batched greedy generation on random prompts (one `<image>` each, equal lengths): new tokens/s per path.

    For gpu.py at LLaVA-1.5-7B dimensions: the default path (static cache, prefill chosen per device) against
    the previous one (dynamic cache, one padded call), interleaved; both must decode the same tokens.
    """
    param = next(model.parameters())
    size = model.vision.config.image_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.image_token_id, (batch_size, prompt_len), generator=gen)
    ids[:, 1] = model.image_token_id
    ids = ids.to(param.device)
    pixels = torch.randn(batch_size, 3, size, size, generator=gen).to(device=param.device, dtype=param.dtype)
    mask = torch.ones_like(ids)
    paths = {"now": {}, "before": {"cache": "dynamic", "prefill": "batched"}}

    def generate(path):
        return model.generate(ids, mask, pixels, max_new_tokens=max_new_tokens, eos_token_id=None,
                              pad_token_id=0, **paths[path])

    with torch.no_grad():
        same = torch.equal(generate("now"), generate("before"))
        times = interleaved({name: (lambda name=name: generate(name)) for name in paths}, repeats=repeats)
    new = batch_size * max_new_tokens
    return {"batch_size": batch_size, "prompt_tokens": prompt_len - 1 + model.num_visual_tokens,
            "max_new_tokens": max_new_tokens, "same_tokens": same,
            **{f"{name}_new_tokens_per_s": new / summary(t)["median_s"] for name, t in times.items()},
            "before_over_now": paired_ratio(times["before"], times["now"])}
