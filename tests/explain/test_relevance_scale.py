"""One colour scale for every relevance picture (deco.explain.scale), labelled on its colour bar.

Before, the single-checkpoint R_t2i figure and the app stretched each map min-max on its own (a uniform map
was drawn dark, a near-uniform one as confidently as a focused one) while the comparison figure drew
relevance / mean; the R_t2q figure drew raw values.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from deco.explain.render import heat_rgb, overlay, overlay_with_bar, t2i_figure, t2q_figure
from deco.explain.scale import LINEAR_LABEL, MIN_VMAX, linear_vmax, log_vmax_of_rows

GREY = Image.new("RGB", (48, 48), (128, 128, 128))


def test_a_uniform_map_is_drawn_at_one_over_vmax_and_a_near_uniform_one_stays_flat():
    # relevance / mean = 1 everywhere, vmax = MIN_VMAX = 2: every pixel is the colour map at 1 / 2
    out = np.asarray(overlay(GREY, torch.full((4, 4), 0.3), alpha=1.0))
    assert (out == heat_rgb(torch.tensor([[0.5]]))[0, 0]).all()  # min-max drew it at 0 (dark purple)
    near = 1.0 + 0.01 * torch.linspace(-1, 1, 16).reshape(4, 4)  # 0.99 .. 1.01: no location worth showing
    out = np.asarray(overlay(GREY, near, alpha=1.0)).astype(int)
    assert np.abs(out - out[0, 0]).max() <= 3  # min-max drew it from dark purple to yellow
    focused = torch.zeros(4, 4)
    focused[0, 0] = 1.0  # 16x the mean: yellow there, the bottom of the scale elsewhere
    out = np.asarray(overlay(GREY, focused, alpha=1.0))
    assert (out[2, 2] == heat_rgb(torch.ones(1, 1))[0, 0]).all() and (
        out[40, 40] == heat_rgb(torch.zeros(1, 1))[0, 0]
    ).all()


def test_the_scale_tops_by_hand():
    assert linear_vmax(torch.full((3, 3), 5.0)) == MIN_VMAX
    assert linear_vmax(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([3.0, 1.0, 0.0, 0.0])) == 3.0  # 3 / 0.5 x 0.5
    assert linear_vmax(torch.tensor([-1.0, 1.0, 1.0, 2.0])) == 2.0  # negatives clipped: mean 1, peak 2
    assert log_vmax_of_rows(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0]])) == 4.0
    assert log_vmax_of_rows(torch.ones(2, 4)) == 1.5


def test_single_checkpoint_figures_label_the_scale_on_their_colour_bars():
    r_t2i = torch.zeros(4, 4)
    r_t2i[1, 2] = 3.0  # mean 3 / 16: the peak is 16x uniform
    fig = t2i_figure(GREY, r_t2i, "avgpool2_16")
    bar = next(ax for ax in fig.axes if ax.get_ylabel() == LINEAR_LABEL)  # was "relevance (min-max)"
    assert bar.get_ylim() == (0.0, 16.0)
    fig = t2q_figure(torch.tensor([1.0, 1.0, 1.0, 5.0]), torch.tensor([[1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0]]))
    bars = fig.axes[0]
    assert bars.get_ylabel().startswith(LINEAR_LABEL) and bars.get_ylim() == (0.0, 2.5)  # 5 / mean 2
    assert [p.get_height() for p in bars.patches] == [0.5, 0.5, 0.5, 2.5]  # drawn as relevance / mean
    token_bar = next(ax for ax in fig.axes if ax.get_ylabel() == LINEAR_LABEL)
    assert token_bar.get_ylim() == (0.0, 2.5)  # the token x query matrix: mean 2, peak 5


def test_the_app_pictures_carry_their_colour_bar():
    rel = torch.zeros(4, 4)
    rel[3, 3] = 1.0
    picture = np.asarray(overlay_with_bar(GREY, rel, size=48))
    assert picture.shape == (48 + 30, 48, 3)
    assert (picture[:48] == np.asarray(overlay(GREY, rel, size=48))).all()  # the map as the files draw it
    strip = picture[48 + 4 : 48 + 14, 4 : 48 - 4]
    assert (strip[:, 0] == heat_rgb(torch.zeros(1, 1))[0, 0]).all() and (
        strip[:, -1] == heat_rgb(torch.ones(1, 1))[0, 0]
    ).all()
    assert np.asarray(overlay_with_bar(GREY, rel, size=48, log_scale=True)).shape == (78, 48, 3)
