"""Benchmarks: a reader for each published file layout, the prompt it asks, and the metric it is scored with.

One module per kind of task (vqa, yesno, choice, grounding, text, shapes) over a shared base. Configs in
`configs/benchmark/` name a class here with `_target_` (`deco.eval.benchmarks.POPE`) and give its paths,
so adding a benchmark is one class and one YAML.
"""

from deco.eval.benchmarks.base import (
    FAMILIES,
    LETTERS,
    MULTIPLE_CHOICE,
    SHORT_ANSWER,
    Benchmark,
    EvalSample,
    format_options,
    load_image,
)
from deco.eval.benchmarks.choice import MMBench, ScienceQA, SEEDBench
from deco.eval.benchmarks.grounding import GROUNDING_PROMPT, RefCOCO, normalise_box
from deco.eval.benchmarks.shapes import ShapesBenchmark
from deco.eval.benchmarks.text import Captioning
from deco.eval.benchmarks.vqa import GQA, TextVQA, VizWiz, VQAv2
from deco.eval.benchmarks.yesno import MME, POPE

__all__ = ["FAMILIES", "GQA", "GROUNDING_PROMPT", "LETTERS", "MME", "MMBench", "MULTIPLE_CHOICE", "POPE",
           "SHORT_ANSWER", "Benchmark", "Captioning", "EvalSample", "RefCOCO", "ScienceQA", "SEEDBench",
           "ShapesBenchmark", "TextVQA", "VQAv2", "VizWiz", "format_options", "load_image", "normalise_box"]
