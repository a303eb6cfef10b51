"""The shapes world as benchmarks: held-out seeds rendered on the fly with `deco.data.shapes.make_sample`."""

from __future__ import annotations

import functools
from typing import Any

from PIL import Image
from torchmetrics import Metric

from deco.eval.benchmarks.base import Benchmark, EvalSample
from deco.eval.metrics import CaptionMetrics, ExactMatch, GroundingAccuracy, YesNoMetrics


class ShapesBenchmark(Benchmark):
    """A shapes-world split rendered from held-out seeds: every trained tiny model can be scored offline.

    Tasks: `attribute` (exact match, open-ended short answers), `existence` (POPE metrics),
    `grounding` (Acc@IoU>=0.5) and `caption` (BLEU / ROUGE / CIDEr). Training uses seeds 0 and 1000;
    the default seed 50_000 is never trained on. No prompt suffix: the training questions have none.
    """

    TASK_FAMILY = {"attribute": "mllm", "existence": "mllm", "grounding": "localization", "caption": "open_vqa"}
    TASK_HEADLINE = {"attribute": "accuracy", "existence": "accuracy", "grounding": "accuracy", "caption": "cider"}

    def __init__(self, task: str, seed: int = 50_000, num_samples: int = 200, image_size: int = 336,
                 name: str | None = None, prompt_suffix: str = "", max_new_tokens: int = 32, limit: int | None = None):
        if task not in self.TASK_FAMILY:
            raise ValueError(f"unknown shapes task {task!r}; allowed: {sorted(self.TASK_FAMILY)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        super().__init__(name or f"shapes_{task}", prompt_suffix, max_new_tokens, limit)
        self.task, self.seed, self.num_samples, self.image_size = task, seed, num_samples, image_size
        self.family, self.headline = self.TASK_FAMILY[task], self.TASK_HEADLINE[task]

    def read(self) -> list[EvalSample]:
        from deco.data.shapes import make_sample

        samples = []
        for index in range(self.num_samples):
            _, _, meta = make_sample(self.seed, index, (self.task,), self.image_size)
            reference: Any = meta["answer"]
            if self.task == "existence":
                reference = meta["answer"].rstrip(".").lower()
            elif self.task == "grounding":
                reference = list(meta["box"])
            elif self.task == "caption":
                reference = [meta["answer"]]

            # Rendered when the batch is built (not all held in memory); a partial pickles into workers.
            image = functools.partial(_shapes_image, self.seed, index, self.image_size)
            samples.append(EvalSample(f"{self.seed}-{index}", meta["question"], reference, image, {"task": self.task}))
        return samples

    def build_metric(self) -> Metric:
        if self.task == "attribute":
            return ExactMatch()
        if self.task == "existence":
            return YesNoMetrics(["shapes"])
        if self.task == "grounding":
            return GroundingAccuracy(rule="lenient")
        return CaptionMetrics()


def _shapes_image(seed: int, index: int, image_size: int) -> Image.Image:
    from deco.data.shapes import render_scene

    return render_scene(seed, index, image_size).image
