"""The pictures: evaluate.py --show_dir's panel, the drawn confusion matrix and confused-pairs bars,
checked by their shapes and a few pixels."""

import cv2
import numpy as np

from psp_tf import classes, visualize

PALETTE = classes.VOC2012_PALETTE  # class 0 (background) is black, like colorize's ignore
NAMES = [f"class {i}" for i in range(len(PALETTE))]
T = visualize.TITLE_HEIGHT


def _scene(height=24, width=32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), np.uint8)
    label[4:12, 8:20] = 1
    label[20:, :] = 255
    prediction = np.zeros((height, width), np.uint8)
    prediction[4:14, 8:24] = 1
    prediction[:3, :3] = 7
    return image, label, prediction


def _is_hatch(pixels):
    return {tuple(p) for p in pixels.reshape(-1, 3)} == set(visualize.HATCH_COLOURS)


def test_show_panel_has_image_truth_prediction_overlay_and_legend():
    image, label, prediction = _scene()
    panel = visualize.show_panel(image, label, prediction, PALETTE, NAMES)
    legend = visualize.legend_panel([0, 1, 7], PALETTE, NAMES, 2 * (24 + T), ignore=True)
    assert panel.shape == (2 * (24 + T), 2 * 32 + legend.shape[1], 3) and panel.dtype == np.uint8
    np.testing.assert_array_equal(panel[T:T + 24, :32], image)
    truth = panel[T:T + 24, 32:64]
    np.testing.assert_array_equal(truth[5, 9], PALETTE[1])
    np.testing.assert_array_equal(truth[0, 0], PALETTE[0])
    predicted = panel[2 * T + 24:, :32]
    np.testing.assert_array_equal(predicted[13, 22], PALETTE[1])
    np.testing.assert_array_equal(predicted[1, 1], PALETTE[7])
    overlay = panel[2 * T + 24:, 32:64]
    np.testing.assert_array_equal(overlay[13, 22], np.round(image[13, 22] * 0.5 + np.array(PALETTE[1]) * 0.5))
    # The legend lists background (largest), class 1, class 7, then the ignore hatch.
    np.testing.assert_array_equal(panel[:, 64:], legend)
    np.testing.assert_array_equal(panel[18 + 9, 64 + 10], PALETTE[1])


def test_ignored_pixels_are_hatched_not_a_class_colour():
    image, label, prediction = _scene()
    panel = visualize.show_panel(image, label, prediction, PALETTE, NAMES)
    ignored = panel[T + 20:T + 24, 32:64]
    assert _is_hatch(ignored)  # both stripes present: no solid palette colour looks like it
    assert not np.any(np.all(ignored == PALETTE[0], axis=-1))  # unlike colorize, not background's black
    swatch = panel[3 * 18 + 4:3 * 18 + 15, 64 + 5:64 + 18]  # the legend's 4th row
    assert _is_hatch(swatch)


def test_show_panel_without_ground_truth():
    image, _, prediction = _scene()
    panel = visualize.show_panel(image, None, prediction, PALETTE, NAMES)
    legend = visualize.legend_panel([0, 1, 7], PALETTE, NAMES, 2 * (24 + T))
    assert panel.shape == (2 * (24 + T), 64 + legend.shape[1], 3)
    np.testing.assert_array_equal(panel[T + 22, 40], (200, 200, 200))


def test_write_show_image_writes_the_panel_as_png(tmp_path):
    image, label, prediction = _scene()
    path = tmp_path / "a.png"
    visualize.write_show_image(str(path), image, label, prediction, PALETTE, NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no staging file left
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1],
                                  visualize.show_panel(image, label, prediction, PALETTE, NAMES))


def _matrix(image, names):
    """The k·cell square of the matrix: right of the axis title and the row names, above the
    30-pixel colour bar."""
    k = len(names)
    cell = int(np.clip(640 // k, 16, 48))
    top = image.shape[0] - 30 - k * cell
    left = T + max(visualize._text_width(n) for n in names) + 8
    return image[top:top + k * cell, left:left + k * cell], cell


def _cell_corner(matrix, cell, i, j):
    return matrix[i * cell + 3, j * cell + 3]  # near the corner: clear of the printed percentage


def test_confusion_image_is_row_normalised_with_empty_rows_hatched():
    confusion = np.array([[30, 10, 0], [0, 0, 0], [5, 0, 15]])
    image = visualize.confusion_image(confusion, ["road", "sky", "car"])
    matrix, cell = _matrix(image, ["road", "sky", "car"])
    assert cell == 48
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 0, 0), visualize._shade(0.75))  # 30 of road's 40
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 0, 1), visualize._shade(0.25))
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 2, 0), visualize._shade(0.25))  # 5 of car's 20
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 0, 2), visualize.LOW_COLOUR)
    assert _is_hatch(matrix[cell:2 * cell])  # sky has no ground-truth pixels
    # The row names sit left of the matrix: black text in the column before it.
    assert np.any(image[-30 - 3 * cell:-30 - 2 * cell, T:T + visualize._text_width("road") + 8].min(axis=-1) < 100)


def test_confusion_image_of_forty_classes():
    confusion = np.diag(np.arange(1, 41))
    image = visualize.confusion_image(confusion, classes.ADE20K_CLASSES[:40])
    matrix, cell = _matrix(image, classes.ADE20K_CLASSES[:40])
    assert cell == 16 and matrix.shape == (640, 640, 3)
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 39, 39), visualize.HIGH_COLOUR)
    np.testing.assert_array_equal(_cell_corner(matrix, cell, 39, 38), visualize.LOW_COLOUR)


def test_confused_pairs_bars_scale_to_the_largest_share():
    pairs = [("wall", "building", 1200, 0.4), ("floor", "rug", 30, 0.1)]
    chart = visualize.confused_pairs_image(pairs, row=20, bar_width=320)
    assert chart.shape[0] == T + 2 * 20
    bar = np.all(chart == visualize.HIGH_COLOUR.astype(np.uint8), axis=-1)
    assert bar[T + 10].sum() == 320 and bar[T + 30].sum() == 80
    empty = visualize.confused_pairs_image([])
    assert empty.shape[0] == T + 20 and not np.any(np.all(empty == visualize.HIGH_COLOUR, axis=-1))


def test_overlay_blends_and_lists_classes_largest_first():
    image, _, prediction = _scene(height=60)
    out = visualize.overlay(image, prediction, PALETTE, NAMES, alpha=0.25)
    legend = visualize.legend_panel([0, 1, 7], PALETTE, NAMES, 60)  # 0: most pixels, 7: fewest
    assert out.shape == (60, 32 + legend.shape[1], 3)
    np.testing.assert_array_equal(out[5, 9], np.round(image[5, 9] * 0.75 + np.array(PALETTE[1]) * 0.25))
    np.testing.assert_array_equal(out[:, 32:], legend)
    np.testing.assert_array_equal(legend[9, 10], PALETTE[0])
    np.testing.assert_array_equal(visualize.overlay(image, prediction, PALETTE, NAMES, alpha=0.25, legend=False),
                                  out[:, :32])


def test_legend_that_does_not_fit_says_how_many_more():
    panel = visualize.legend_panel(list(range(10)), PALETTE, NAMES, height=3 * 18)
    np.testing.assert_array_equal(panel[9, 10], PALETTE[0])
    np.testing.assert_array_equal(panel[18 + 9, 10], PALETTE[1])
    last = panel[2 * 18:]  # "+8 more" in place of class 2's swatch
    assert not np.any(np.all(last == PALETTE[2], axis=-1)) and last.min() < 100
