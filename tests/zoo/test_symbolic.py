"""Symbolic scenes: label masks follow the picture, coverage grids pool them exactly."""

import numpy as np
import torch

from deco.data.shapes import COLOURS, Scene, ShapeObject, render_scene
from deco.zoo.symbolic import CLASSES, NUM_CLASSES, SymbolicScene, class_index, coverage_grid, label_mask
from PIL import Image


def test_classes_are_background_plus_each_colour_shape_pair():
    assert NUM_CLASSES == 19 and CLASSES[0] == "background"
    assert CLASSES[class_index("red", "circle")] == "red circle"
    assert CLASSES[class_index("orange", "triangle")] == "orange triangle"


def test_label_mask_marks_exactly_the_pixels_drawn_in_the_objects_colour():
    scene = render_scene(0, 3)
    mask = label_mask(scene)
    pixels = np.asarray(scene.image)
    for obj in scene.objects:
        drawn = (pixels == np.array(COLOURS[obj.colour])).all(-1)
        assert np.array_equal(mask == class_index(obj.colour, obj.shape), drawn)


def test_coverage_grid_equals_a_hand_count_for_a_square():
    # a 336 px image, one square covering x 28..83, y 0..27: cells (0,1) and (0,2) fully, nothing else
    obj = ShapeObject("square", "blue", "small", (28, 0, 84, 28), 336)
    scene = Scene(Image.new("RGB", (336, 336)), [obj])
    cov = coverage_grid(label_mask(scene), 12)
    k = class_index("blue", "square")
    assert cov.shape == (144, NUM_CLASSES)
    assert np.allclose(cov.sum(1), 1.0)
    assert cov[1, k] == 1.0 and cov[2, k] == 1.0 and cov[0, 0] == 1.0 and cov[3, 0] == 1.0
    # at 24 x 24 (14 px cells) the same square covers 4 cells of row 0 and of row 1
    cov24 = coverage_grid(label_mask(scene), 24)
    assert sorted(np.flatnonzero(cov24[:, k] == 1.0)) == [2, 3, 4, 5, 26, 27, 28, 29]
    # half a cell: x 28..41 of a 28 px cell
    half = Scene(Image.new("RGB", (336, 336)), [ShapeObject("square", "red", "small", (28, 0, 42, 28), 336)])
    assert coverage_grid(label_mask(half), 12)[1, class_index("red", "square")] == 0.5


def test_symbolic_scene_is_coverage_times_table_plus_a_position_code():
    torch.manual_seed(0)
    sym = SymbolicScene(16)
    cov = torch.zeros(2, 4, NUM_CLASSES)
    cov[..., 0] = 1.0
    cov[1, 3] = 0.0
    cov[1, 3, 5] = 1.0
    out = sym(cov)
    assert out.shape == (2, 4, 16)
    # same cell, different content: the difference is the difference of two table rows
    assert torch.allclose(out[1, 3] - out[0, 3], sym.content[5] - sym.content[0], atol=1e-6)
    # same content, different cells: positions differ
    assert not torch.allclose(out[0, 0], out[0, 3])


def test_sparse_curriculum_keeps_every_object_cell_and_masks_the_padding():
    from deco.zoo.scenes import keep_cells, sparsify

    cov = torch.zeros(2, 16, NUM_CLASSES)
    cov[..., 0] = 1.0
    for row, cells in ((0, [1, 5]), (1, [2, 3, 7, 11])):
        cov[row, cells, 0] = 0.4
        cov[row, cells, 3] = 0.6
    gen = torch.Generator().manual_seed(0)
    assert keep_cells(cov[0], 0.0, gen).tolist() == [1, 5]
    assert len(keep_cells(cov[0], 1.0, gen)) == 16
    half = keep_cells(cov[1], 0.5, gen)
    assert {2, 3, 7, 11} <= set(half.tolist()) and len(half) == 4 + 6 and half.tolist() == sorted(half.tolist())
    kept, cells, valid = sparsify(cov, [0.0, 0.0], seed=0)
    assert cells.tolist() == [[1, 5, 0, 0], [2, 3, 7, 11]] and valid.tolist() == [[True, True, False, False], [True] * 4]
    assert torch.equal(kept[1], cov[1, [2, 3, 7, 11]])
    dense, all_cells, all_valid = sparsify(cov, [1.0, 1.0], seed=0)
    assert dense is cov and all_cells.shape == (2, 16) and bool(all_valid.all())
    # the embedder puts each kept cell at its own grid position
    sym = SymbolicScene(8)
    assert torch.allclose(sym(kept, cells, 4)[1], sym(cov)[1, [2, 3, 7, 11]], atol=1e-6)

