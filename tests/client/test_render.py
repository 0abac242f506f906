"""Figures have the documented size and highlight exactly the pixels of the masks."""
from __future__ import annotations

import numpy as np
import pytest

from galore_cli import render
from galore_cli.report import attributive_figure, counterfactual_figure, deliberative_figure
from galore_client.results import Region, center_crop_box, mask_bbox

from .conftest import box_mask

INSIDE, DIMMED = 200, 70  # gray 200 kept inside a region; 200 * DIM = 70 outside


def panel(figure: render.Figure, index: int) -> np.ndarray:
    x0, y0, x1, y1 = figure.panel_boxes[index]
    return np.asarray(figure.image)[y0:y1, x0:x1]


def assert_highlighted(picture: np.ndarray, mask: np.ndarray, color, inside: int, dimmed: int) -> None:
    outline = render.inner_outline(mask)
    core = mask & ~outline
    assert core.any() and outline.any()
    assert (picture[core] == inside).all(), "pixels inside the region must keep their value"
    assert (picture[outline] == np.asarray(color)).all(), "the region's edge must be outlined in its colour"
    assert (picture[~mask] == dimmed).all(), "pixels outside the region must be dimmed"


def test_highlight_keeps_mask_pixels_and_dims_the_rest(gray_image):
    mask = box_mask(30, 20, 70, 60)
    out = render.highlight(gray_image, mask, color=(1, 2, 3))
    assert_highlighted(out, mask, (1, 2, 3), INSIDE, DIMMED)
    # the outline is OUTLINE px wide on the inside of the edge
    assert tuple(out[40, 30]) == (1, 2, 3) and tuple(out[40, 30 + render.OUTLINE]) == (200, 200, 200)


def test_highlight_rejects_a_mask_of_another_size(gray_image):
    with pytest.raises(ValueError, match="mask shape"):
        render.highlight(gray_image, np.zeros((10, 10), bool))


def test_deliberative_figure_has_one_panel_per_insecurity_strongest_first(gray_image, explanation):
    figure = deliberative_figure(gray_image, explanation)
    width, height = figure.image.size
    assert width == 3 * 120 + 4 * render.PAD
    caption_space = height - (render.TITLE_HEIGHT + render.PAD + 80 + 2 * render.PAD)
    assert caption_space >= 2 * render.LINE_HEIGHT and caption_space % render.LINE_HEIGHT == 0
    assert [b[2] - b[0] for b in figure.panel_boxes] == [120, 120, 120]
    # strengths 0.9 (pair), 0.6 (triple), 0.4 (pair): panels in that order, each with its own colour
    expected = [box_mask(10, 10, 50, 50), box_mask(0, 0, 30, 30), box_mask(60, 40, 100, 75)]
    for i, mask in enumerate(expected):
        assert_highlighted(panel(figure, i), mask, render.PALETTE[i], INSIDE, DIMMED)


def test_counterfactual_figure_puts_query_and_exemplar_side_by_side(gray_image, exemplar_image, explanation):
    figure = counterfactual_figure(gray_image, explanation, {287: exemplar_image})
    assert figure.image.size[0] == 120 + 40 + 3 * render.PAD
    assert_highlighted(panel(figure, 0), box_mask(20, 20, 60, 60), render.PALETTE[0], INSIDE, DIMMED)
    assert_highlighted(panel(figure, 1), box_mask(5, 5, 25, 45, 40, 50), render.PALETTE[1], 100, 35)


def test_counterfactual_without_exemplar_pixels_shows_a_placeholder(gray_image, explanation):
    figure = counterfactual_figure(gray_image, explanation, {})
    placeholder = panel(figure, 1)
    assert placeholder.shape[:2] == (80, 120)
    assert (placeholder != np.asarray(render.PALETTE[1])).any(axis=-1).all()  # nothing outlined


def test_attributive_overlay_is_hottest_in_the_hot_grid_cell(gray_image, explanation):
    figure = attributive_figure(gray_image, explanation)
    assert len(figure.panel_boxes) == 3  # input, attributive, self-aware
    assert (panel(figure, 0) == 200).all()  # the input is shown as is
    overlay = panel(figure, 1).astype(int)
    # crop box (20, 0, 100, 80) on a 7x7 grid: hot cell (row 1, col 5) spans x in [77.1, 88.6), y in [11.4, 22.9)
    redness = overlay[..., 0] - overlay[..., 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert 77 <= x < 89 and 11 <= y < 23
    assert (overlay[:, :20] == DIMMED).all()  # left of the crop box: dimmed, no heat colour
    assert tuple(overlay[70, 25]) == (100, 100, 164)  # cold cell: half gray 200, half dark blue (0, 0, 128)
    outline = render.inner_outline(box_mask(70, 5, 110, 40))
    assert (overlay[outline] == 255).all()  # the attributive mask outlined in white
    # the self-aware side has no heatmap: its mask is highlighted instead
    assert_highlighted(panel(figure, 2), box_mask(75, 10, 105, 35), render.PALETTE[0], INSIDE, DIMMED)


def test_large_images_are_scaled_to_max_side_with_their_masks():
    image = np.full((500, 1000, 3), 200, np.uint8)
    mask = np.zeros((500, 1000), bool)
    mask[100:300, 500:900] = True
    small, small_mask = render.fit(image, mask)
    assert small.shape == (192, 384, 3) and small_mask.shape == (192, 384)
    assert mask_bbox(small_mask) == (192, 38, 346, 115)


def test_region_and_crop_geometry():
    assert Region.from_mask(box_mask(3, 4, 9, 10), 1.0).bbox == (3, 4, 9, 10)
    assert Region.from_mask(np.zeros((5, 5), bool), 0.0).bbox is None
    # 640x480 -> 341x256 (short side 256 = 224 / 0.875), crop offset left 58, top 16: in original pixels
    # x from 58 * 640 / 341 = 108.9 to 282 * 640 / 341 = 529.3, y from 30 to 450 (rounded outwards)
    assert center_crop_box(640, 480, 224) == (108, 30, 530, 450)
    assert center_crop_box(480, 640, 224, resize=224) == (0, 79, 480, 561)  # 224x298, top 37


def test_heat_colors_run_from_dark_blue_to_red():
    colors = render.heat_colors(np.array([0.0, 0.5, 1.0, 7.0]))
    assert colors.tolist() == [[0, 0, 128], [0, 230, 230], [220, 0, 0], [220, 0, 0]]


def test_compose_wraps_panels_into_rows():
    pictures = [np.full((h, 50, 3), i * 40, np.uint8) for i, h in enumerate((30, 40, 20, 25, 35))]
    figure = render.compose([render.Panel(p, ("one line",)) for p in pictures], columns=3)
    row1 = render.PAD + 40 + render.PAD + render.LINE_HEIGHT + render.PAD  # tallest picture of row 1 is 40
    assert figure.image.size == (3 * 50 + 4 * render.PAD, row1 + 35 + render.PAD + render.LINE_HEIGHT + render.PAD)
    assert [box[:2] for box in figure.panel_boxes] == [
        (10, 10), (70, 10), (130, 10), (10, row1), (70, row1)]
    for i, (x0, y0, x1, y1) in enumerate(figure.panel_boxes):
        assert (np.asarray(figure.image)[y0:y1, x0:x1] == i * 40).all()


def test_without_a_crop_box_the_heatmap_is_not_guessed_and_the_region_is_highlighted(gray_image, explanation):
    from dataclasses import replace

    figure = attributive_figure(gray_image, replace(explanation, crop_box=None))
    assert_highlighted(panel(figure, 1), box_mask(70, 5, 110, 40), render.PALETTE[0], INSIDE, DIMMED)
