"""Batched greedy answering over a benchmark and its scoring: the plain loop behind `deco.evaluate`.

`PromptDataset` turns benchmark samples into LLaVA prompts (vicuna_v1 template, `<image>` first,
the benchmark's answer-format suffix) and preprocessed images; `generate_answers` runs them
through `MLLM.generate` in left-padded batches (KV cache, stop at EOS or `max_new_tokens`) behind
a progress bar and decodes with `skip_special_tokens`. Left padding keeps every prompt ending at
the last column, so a batch gives the same answers as one question at a time.
`evaluate_benchmark` adds the metric and a predictions JSONL (one line per question: id, prompt,
answer, reference), written before the answers are scored, and resumes from a previous one
(`deco.eval.predictions`). Under torch.distributed each rank answers a strided shard, the metric
reduces across ranks and rank 0 writes the merged predictions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from deco.data.collate import Collator
from deco.data.conversation import build_prompt, tokenize_prompt
from deco.data.image import process_image, processor_size
from deco.eval.benchmarks import Benchmark, EvalSample, load_image
from deco.eval.predictions import finished_answers, id_key, jsonable
from deco.utils.io import atomic_write_text

log = logging.getLogger(__name__)


class PromptDataset(Dataset):
    """Items: input_ids (t, BOS + prompt ending "ASSISTANT:"), pixel_values (3 S S or None), index."""

    def __init__(self, samples: Sequence[EvalSample], prompts: Sequence[str], tokenizer, image_processor,
                 template: str = "vicuna_v1", image_aspect: str = "pad"):
        if len(samples) != len(prompts):
            raise ValueError(f"{len(samples)} samples but {len(prompts)} prompts")
        self.samples, self.prompts = list(samples), list(prompts)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.template, self.image_aspect = template, image_aspect

    def __len__(self) -> int:
        return len(self.samples)

    def prompt_text(self, i: int) -> str:
        return build_prompt(self.prompts[i], self.template, with_image=self.samples[i].image is not None)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        with_image = sample.image is not None
        input_ids = tokenize_prompt(self.prompts[i], self.tokenizer, self.template, with_image=with_image)
        pixels = None
        if with_image:
            try:
                image = load_image(sample.image)
            except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
                raise type(error)(f"{sample.where or sample.id}: image {sample.image} could not be read ({error}); "
                                  "the answers so far are in predictions.jsonl and a rerun resumes from them") from None
            pixels = process_image(image, self.image_processor, self.image_aspect)  # 3 S S
        return {"input_ids": input_ids, "pixel_values": pixels, "index": i}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", disable=not enabled, dynamic_ncols=True)


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "answering",
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy answers for every item of `dataset` (items as PromptDataset's), in dataset order.

    on_batch(indices, answers) is called after each batch (to stream predictions / update metrics).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and eos tokens for batched generation")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    image_size = processor_size(dataset.image_processor) if hasattr(dataset, "image_processor") else None
    collate = Collator(pad_token_id=tokenizer.pad_token_id, padding_side="left", image_size=image_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    param = next(model.parameters())
    answers: list[str | None] = [None] * len(dataset)
    was_training = model.training
    model.eval()
    try:
        with _progress(len(dataset), desc, progress) as bar:
            for batch in loader:
                pixels = batch["pixel_values"]
                if pixels is not None:
                    pixels = pixels.to(device=device, dtype=param.dtype)
                new_tokens = model.generate(
                    batch["input_ids"].to(device), batch["attention_mask"].to(device), pixels,
                    max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )  # b n_new
                texts = [t.strip() for t in tokenizer.batch_decode(new_tokens.cpu(), skip_special_tokens=True)]
                indices = list(batch["index"])
                for i, text in zip(indices, texts):
                    answers[i] = text
                if on_batch is not None:
                    on_batch(indices, texts)
                bar.update(len(indices))
    finally:
        model.train(was_training)
    return answers  # type: ignore[return-value]


@dataclass
class EvalResult:
    benchmark: str
    family: str
    headline: str
    metrics: dict[str, float]
    num_questions: int
    seconds: float
    predictions_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def questions_per_s(self) -> float:
        return self.num_questions / self.seconds if self.seconds > 0 else math.inf


def metric_values(values: dict) -> dict[str, float]:
    """compute() output -> plain floats (ints for counts)."""
    out = {}
    for key, value in values.items():
        value = value.item() if isinstance(value, torch.Tensor) else value
        if isinstance(value, str):  # e.g. the caption tokenizer used
            out[key] = value
            continue
        out[key] = int(value) if key in ("n", "unparsed", "unclear", "questions") else round(float(value), 4)
    return out


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def evaluate_benchmark(
    model,
    tokenizer,
    image_processor,
    benchmark: Benchmark,
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    template: str = "vicuna_v1",
    image_aspect: str = "pad",
    num_workers: int = 0,
    device: str | torch.device | None = None,
    predictions_path: str | Path | None = None,
    progress: bool = True,
    resume_from: str | Path | None = None,
    model_id: str | None = None,
) -> EvalResult:
    """Answer every question of `benchmark`, score the answers, optionally write predictions JSONL.

    Answers already in `resume_from` (default: `predictions_path` itself, if it exists) for the same
    question, prompt and reference are reused and not asked again; with `model_id` (see
    `deco.eval.predictions.fingerprint`) every line records it and only lines of the same model are reused.
    """
    rank, world = _dist()
    benchmark.use_image_aspect(image_aspect)
    samples = benchmark.samples()
    everything = PromptDataset(samples, [benchmark.prompt(s) for s in samples], tokenizer, image_processor,
                               template, image_aspect)
    path = Path(predictions_path) if predictions_path is not None else None
    source = Path(resume_from) if resume_from is not None else path
    done = {} if source is None else finished_answers(
        source, [s.id for s in samples], [everything.prompt_text(i) for i in range(len(samples))],
        [jsonable(s.reference) for s in samples], model_id)
    if done and rank == 0:
        log.info("%s: resuming, %d of %d answers read from %s", benchmark.name, len(done), len(samples), source)
    todo = [i for i, s in enumerate(samples) if id_key(s.id) not in done]
    shard = todo[rank::world]  # strided: each rank gets every world-th open question
    shard_samples = [samples[i] for i in shard]
    dataset = PromptDataset(shard_samples, [everything.prompts[i] for i in shard], tokenizer, image_processor,
                            template, image_aspect)
    metric = benchmark.build_metric() if benchmark.has_references else None
    if metric is not None:  # states on the model's device, so DDP (NCCL) can reduce them
        metric = metric.to(torch.device(device) if device is not None else next(model.parameters()).device)
    reused = [done[id_key(s.id)] for s in samples if id_key(s.id) in done]  # in question order
    if metric is not None and reused and rank == 0:  # counted once: the other ranks' metrics add to rank 0's
        benchmark.update(metric, [r["answer"] for r in reused], [s for s in samples if id_key(s.id) in done])
    records: list[dict] = []
    # One process: stream lines as batches finish (a killed run keeps what it answered). Several: gather at the end.
    stream = None
    if path is not None and world == 1:
        atomic_write_text(path, "".join(_line(r) for r in reused))  # the reused answers first, never lost
        stream = path.open("a", encoding="utf-8")

    def on_batch(indices: list[int], answers: list[str]) -> None:
        batch_samples = [shard_samples[i] for i in indices]
        for i, answer in zip(indices, answers):
            s = shard_samples[i]
            record = {"id": jsonable(s.id), "prompt": dataset.prompt_text(i), "answer": answer,
                      "reference": jsonable(s.reference), **{k: jsonable(v) for k, v in s.meta.items()}}
            if model_id is not None:
                record["model"] = model_id
            if stream is not None:
                stream.write(_line(record))
            else:
                records.append({"order": shard[i], **record})
        if stream is not None:
            stream.flush()
        if metric is not None:  # scored after the lines are on disk: a scoring error loses no answer
            benchmark.update(metric, answers, batch_samples)

    max_new = max_new_tokens or benchmark.max_new_tokens
    start = time.perf_counter()
    try:
        generate_answers(model, tokenizer, dataset, batch_size=batch_size, max_new_tokens=max_new,
                         num_workers=num_workers, device=device, progress=progress and rank == 0,
                         desc=benchmark.name, on_batch=on_batch)
    finally:
        if stream is not None:
            stream.close()
    seconds = time.perf_counter() - start

    values = metric_values(metric.compute()) if metric is not None else {"n": len(samples)}
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, records)
        if path is not None and rank == 0:
            order = {id_key(s.id): k for k, s in enumerate(samples)}
            merged = [{"order": order[id_key(r["id"])], **r} for r in reused] + [r for part in gathered for r in part]
            merged.sort(key=lambda r: r["order"])
            atomic_write_text(path, "".join(_line({k: v for k, v in r.items() if k != "order"}) for r in merged))
    extra = {"scoring": benchmark.scoring(), "resumed": len(done)}
    return EvalResult(benchmark.name, benchmark.family, benchmark.headline, values, len(samples), seconds,
                      str(predictions_path) if predictions_path is not None else None, extra)


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def _shown_metrics(metrics: dict) -> list[tuple[str, object]]:
    """The metrics worth printing: a split's `<split>/<metric>` is left out when it only repeats the overall value
    (a benchmark with one split, e.g. shapes_existence's `shapes/accuracy`); metrics.json keeps them all."""
    splits = {k.split("/", 1)[0] for k in metrics if "/" in k}
    if len(splits) > 1:
        return list(metrics.items())
    return [(k, v) for k, v in metrics.items() if "/" not in k or metrics.get(k.split("/", 1)[1]) != v]


def format_table(results: Sequence[EvalResult]) -> str:
    """A plain-text table: one row per (benchmark, metric), then a line per marker it uses."""
    rows = [("benchmark", "family", "metric", "value")]
    for result in results:
        for key, value in _shown_metrics(result.metrics):
            marker = " *" if key == result.headline else ""
            text = f"{value:g}" if isinstance(value, float) else str(value)
            rows.append((result.benchmark, result.family, key + marker, text))
        rows.append((result.benchmark, result.family, "questions/s", f"{result.questions_per_s:.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* the headline metric (the one metrics.json's `headline` names and a sweep reports)")
    if any("unclear" in r.metrics for r in results):
        lines.append("unclear: answers that say neither yes nor no; POPE's rule (LLaVA's) counts every answer "
                     "without a \"no\" as \"yes\", so they count in precision, recall and f1")
    return "\n".join(lines)
