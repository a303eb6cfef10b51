"""The arena's statistics: mean ± 95 % CI (Student t over seeds), the overall score, rank correlations."""

from __future__ import annotations

from scipy import stats

from deco.report import stats as report_stats

TASKS = ("existence", "attribute", "grounding", "caption")


def mean_ci(values: list[float]) -> tuple[float, float | None] | None:
    """deco.report's mean ± 95 % Student-t CI in the table's form: (mean, half-width; None for one value), or None
    when there is no value."""
    m, half, n = report_stats.mean_ci(values)
    if n == 0:
        return None
    return m, (half if n > 1 else None)


def fmt(ci: tuple[float, float | None] | None, digits: int = 1) -> str:
    if ci is None:
        return "-"
    m, half = ci
    return f"{m:.{digits}f}" if half is None else f"{m:.{digits}f} ± {half:.{digits}f}"


def overall(scores: dict[str, float]) -> float | None:
    """Mean of existence, attribute and grounding Acc@0.5 (%) and caption CIDEr / 10 (the shapes world's
    captions score 500-800); None while a task is missing."""
    if any(t not in scores for t in TASKS):
        return None
    return (scores["existence"] + scores["attribute"] + scores["grounding"] + scores["caption"] / 10) / 4


def rank_correlation(arena: dict[str, float], published: dict[str, float]) -> tuple[int, float, float] | None:
    """(n, Kendall tau-b, Spearman rho) over the names both have; None under 3 names."""
    names = sorted(set(arena) & set(published))
    if len(names) < 3:
        return None
    a, p = [arena[n] for n in names], [published[n] for n in names]
    return len(names), float(stats.kendalltau(a, p).statistic), float(stats.spearmanr(a, p).statistic)
