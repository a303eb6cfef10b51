"""Benchmark evaluation: readers for the LLaVA-1.5 suite and the shapes world, answer parsing, metrics, the answer loop.

Science code: no Lightning, no Hydra. `deco.evaluate` is the command-line entry point.
"""

from deco.eval.benchmarks import Benchmark, EvalSample
from deco.eval.runner import EvalResult, evaluate_benchmark, format_table, generate_answers

__all__ = ["Benchmark", "EvalSample", "EvalResult", "evaluate_benchmark", "format_table", "generate_answers"]
