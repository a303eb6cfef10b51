"""The one colour scale of every relevance picture: the files of `deco.explain`, the comparison figure, the
training callback's maps and the app.

A map is drawn relative to its mean, relevance / mean (negatives clipped), so 1 = uniform relevance and the
brightness says how peaked a map is whatever its cell count (576 patches or 16 queries), instead of each map
being stretched min-max on its own (which drew a near-uniform map as confidently as a focused one):
- R_t2i and R_t2q: linear from 0 to `vmax`, the largest value shown (one map, or every row of a comparison),
  at least MIN_VMAX, so a near-uniform map is drawn mid-scale instead of saturated; colour bar LINEAR_LABEL;
- R_q2i: log from 1 to `vmax`, each query's row relative to its own mean (a pooling query covers a few
  patches, a linear one a single patch, a Q-Former query all of them: peaks differ by orders of magnitude;
  uniform or below is dark); colour bar LOG_LABEL.
"""

from __future__ import annotations

import math

import torch

LINEAR_LABEL = "relevance / mean (1 = uniform)"
LOG_LABEL = "relevance / mean (1 = uniform), log"
MIN_VMAX = 2.0  # linear scales reach at least twice the mean
MIN_LOG_VMAX = 1.5  # log scales at least 1.5x the row mean


def relative_to_uniform(rel: torch.Tensor) -> torch.Tensor:
    """rel / mean(rel), negatives clipped: 1 = uniform, so maps with different cell counts share a scale."""
    rel = rel.detach().float().cpu().clamp(min=0)
    mean = float(rel.mean())
    return rel / mean if mean > 0 else torch.zeros_like(rel)


def linear_vmax(*maps: torch.Tensor) -> float:
    """Top of the linear scale shared by `maps`: their largest relevance / mean, at least MIN_VMAX."""
    return max([MIN_VMAX, *(float(relative_to_uniform(m).max()) for m in maps)])


def linear_scaled(rel: torch.Tensor, vmax: float) -> torch.Tensor:
    """rel / mean / vmax, in [0, 1]: where `rel` sits on the linear scale from 0 to `vmax` x uniform."""
    return (relative_to_uniform(rel) / vmax).clamp(0, 1)


def log_vmax_of_rows(rows: torch.Tensor) -> float:
    """Top of the log scale shared by the rows of `rows` (k n): the largest row max / row mean, at least
    MIN_LOG_VMAX."""
    rows = rows.detach().float().cpu().clamp(min=0)
    peaks = rows.max(1).values / rows.mean(1).clamp_min(1e-12)
    return max(float(peaks.max()), MIN_LOG_VMAX)


def log_scaled(rel: torch.Tensor, log_vmax: float) -> torch.Tensor:
    """log(max(rel / mean, 1)) / log(log_vmax), in [0, 1]: 0 = uniform or below, 1 = log_vmax x uniform."""
    ratio = relative_to_uniform(rel).clamp(min=1.0)
    return (ratio.log() / math.log(max(log_vmax, 1.0 + 1e-6))).clamp(0, 1)
