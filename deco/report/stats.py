"""Mean and 95% confidence interval over seeds (Student t, n-1 degrees of freedom, `scipy.stats`)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the two-sided 95% Student t quantile."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(stats.t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) of the finite values; half-width is nan for n < 2."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(xs.mean())
    if n < 2:
        return mean, math.nan, 1
    sem = float(xs.std(ddof=1)) / math.sqrt(n)
    return mean, t_quantile_975(n - 1) * sem, n


def binomial_ci(rate: float, questions: int) -> float:
    """95% CI half-width of a rate measured on `questions` independent questions (normal approximation,
    1.96 sqrt(p (1 - p) / n)): what one seed's accuracy on 200 questions can tell apart."""
    if questions < 1 or not math.isfinite(rate):
        return math.nan
    return 1.96 * math.sqrt(rate * (1 - rate) / questions)
