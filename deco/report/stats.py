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
    """Half the width of the 95% Wilson score interval of a rate measured on `questions` independent questions:
    what one seed's accuracy can tell apart (unlike the normal approximation, not 0 at a rate of 0 or 1)."""
    if questions < 1 or not math.isfinite(rate):
        return math.nan
    z2, n = 1.96**2, questions
    return 1.96 * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
