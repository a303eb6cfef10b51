"""Figure 6 — data loader: samples/s from webdataset shards with 2 workers vs what a train step consumes.

    python -m experiments.perf.bench_data            # tiny model, 336 px images (about a minute on 2 cores)
    python -m experiments.perf.bench_data --smoke    # seconds

Shards: shapes-world samples written by `deco.data.to_wds` (JPEG + JSON, as for LLaVA data) at the model's
image size. Loader side: `WdsDataset` + `WdsLoader` exactly as `data=wds` builds them (shuffle buffer, JPEG
decode, LLaVA 'pad' preprocessing, tokenization, collation) with 2 workers; samples/s over full epochs after
the workers have started. Step side: one optimizer step of the tiny model (avgpool projector, 144 tokens) on
a batch of the same size; its consumption is batch_size / step time. The figure is loader samples/s divided
by step samples/s (goal >= 3: the loader keeps the step fed with room to spare). Both run in this process,
alternating loader epochs with blocks of steps, and each side's median is used; the loader is measured on
its own, not while a step runs, so on a 2-core machine its workers and a concurrent step would share cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from experiments.perf.common import Bench, make_optimizer, projector_configs, train_step_fn

GOAL = 3.0


def run(smoke: bool = False, batch_size: int = 8, num_workers: int = 2) -> dict:
    from deco.data.collate import Collator
    from deco.data.to_wds import convert
    from deco.data.wds import WdsDataset
    from deco.data.wds_loader import WdsLoader

    size = "smoke" if smoke else "tiny"
    bench = Bench(size)
    n_samples, rounds, steps_per_round = (48, 2, 2) if smoke else (256, 3, 4)
    projector = next(v for k, v in projector_configs(size).items() if k.startswith("avgpool"))
    with tempfile.TemporaryDirectory() as tmp:
        convert(input="shapes", num_samples=n_samples, image_size=bench.image_size, out_dir=tmp, shard_size=32,
                progress=False)
        dataset = WdsDataset(tmp, shuffle_buffer=64, tokenizer=bench.tokenizer, image_processor=bench.image_processor,
                             template="vicuna_v1", max_length=256, image_aspect="pad")
        loader = WdsLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=True,
                           collate_fn=Collator(bench.tokenizer.pad_token_id))

        model = bench.model(projector)
        optimizer, _ = make_optimizer(model, bench.stage)
        batch = {k: v for k, v in next(iter(loader)).items() if isinstance(v, torch.Tensor)}  # also starts workers
        step = train_step_fn(model, batch, optimizer, clip=1.0)
        step()  # warm-up

        loader_rates, step_times = [], []
        for _ in range(rounds):
            n, start = 0, time.perf_counter()
            for b in loader:
                n += b["input_ids"].shape[0]
            loader_rates.append(n / (time.perf_counter() - start))
            for _ in range(steps_per_round):
                start = time.perf_counter()
                step()
                step_times.append(time.perf_counter() - start)
        loader_sps = statistics.median(loader_rates)
        step_s = statistics.median(step_times)
    step_sps = batch_size / step_s
    ratio = loader_sps / step_sps
    return {
        "figure": "data loader",
        "comparison": f"wds loader ({num_workers} workers) samples/s / {size} train step samples/s",
        "size": size,
        "image_size": bench.image_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "samples_per_epoch": n_samples,
        "loader_samples_per_s": loader_sps,
        "loader_samples_per_s_all": loader_rates,
        "step_s": step_s,
        "step_samples_per_s": step_sps,
        "ratio": ratio,
        "goal": f">= {GOAL}",
        "meets_goal": ratio >= GOAL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = run(smoke=args.smoke, batch_size=args.batch_size, num_workers=args.workers)
    print(json.dumps(result, indent=1))
    print(f"loader {result['loader_samples_per_s']:.1f} samples/s vs train step {result['step_samples_per_s']:.1f} "
          f"samples/s ({result['step_s'] * 1000:.0f} ms / batch of {result['batch_size']}): "
          f"ratio {result['ratio']:.2f}x (goal {result['goal']})")


if __name__ == "__main__":
    main()
