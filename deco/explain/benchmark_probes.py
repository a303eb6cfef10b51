"""Real-image probes: a grounding benchmark's own images and boxes (RefCOCO / RefCOCO+ / RefCOCOg) for mode=score.

`deco.explain mode=score benchmark=refcoco` reads the benchmark exactly as `deco.evaluate` does
(`deco.eval.benchmarks.RefCOCO`: MDETR's `final_<dataset>_<split>.json`, one entry per referring
expression, its box `[x, y, w, h]` in pixels), puts each box into the frame of the image the model sees
(`use_image_aspect`: LLaVA-1.5's padded square or the stretched image; "crop" cuts objects off and is refused)
and builds one teacher-forced probe per expression:

* with a template that asks questions (vicuna_v1...), the benchmark's own prompt ("Please provide the bounding
  box coordinate of the region this sentence describes: {phrase}.") and, as the explained target, the
  reference box printed as LLaVA-1.5 prints boxes ("[0.12, 0.34, 0.56, 0.78]"): where does the model look
  while it is made to say the right box?
* with the `plain` pretraining template (no question), the expression itself as the target.

The scored box is the reference box (clipped to the image: COCO boxes may overhang by a rounding pixel).
"""

from __future__ import annotations

from deco.data.shapes import format_box
from deco.eval.benchmarks.base import load_image
from deco.eval.benchmarks.grounding import RefCOCO
from deco.explain.inputs import build_input
from deco.explain.score import Probe


def reference_box(box, where: str) -> tuple[float, float, float, float]:
    """The benchmark's normalised (x1, y1, x2, y2) clipped to [0, 1]; ValueError naming the row if it is empty."""
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"{where}: the reference box {list(box)} has no area inside the image")
    return x1, y1, x2, y2


def benchmark_probes(
    benchmark: RefCOCO, tokenizer, image_processor, template: str, image_aspect: str, num_samples: int | None = None
) -> list[Probe]:
    """One probe per referring expression of `benchmark` (the first `num_samples`; null: all), scored on its box."""
    if not isinstance(benchmark, RefCOCO):
        raise ValueError(
            f"benchmark {getattr(benchmark, 'name', benchmark)!r} has no reference boxes to score "
            f"relevance against; use a grounding benchmark (refcoco, refcoco_plus, refcocog)"
        )
    benchmark.use_image_aspect(image_aspect)  # the boxes in the frame of the image the model sees
    samples = benchmark.samples()
    probes = []
    for index, sample in enumerate(samples[:num_samples] if num_samples else samples):
        box = reference_box(sample.reference, sample.where or str(sample.id))
        phrase = sample.meta["phrase"]
        if template == "plain":
            text, question, task = phrase, None, "caption"
        else:
            text, question, task = format_box(box), benchmark.prompt(sample), "grounding"
        inp = build_input(
            tokenizer,
            image_processor,
            load_image(sample.image),
            text,
            question=question,
            template=template,
            image_aspect=image_aspect,
        )
        inp.meta.update(index=index, task=task, phrase=phrase, box=box, id=sample.id)
        probes.append(Probe(inp=inp, box=box, index=index, task=task, phrase=phrase, probe_set=benchmark.name))
    return probes
