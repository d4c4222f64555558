"""Tiling, padding, flip merge and count-map blending against the examples of docs/caffe_reference.md §3.4."""

import numpy as np
import pytest
import tensorflow as tf

from support import full_map_reference as reference
from psp_tf.evaluation import sliding_window as sw

MEAN = (123.68, 116.779, 103.939)


def test_tile_starts_match_the_reference_examples():
    # Cityscapes 1025x2049 at crop 713, stride 476: rows 1-713 and 313-1025; cols 1, 477, 953, 1337.
    np.testing.assert_array_equal(sw.tile_starts(1025, 713, 476).numpy() + 1, [1, 313])
    np.testing.assert_array_equal(sw.tile_starts(2049, 713, 476).numpy() + 1, [1, 477, 953, 1337])
    # VOC 385x513 padded to 473x513 at crop 473, stride 316: cols 1-473 and 41-513.
    np.testing.assert_array_equal(sw.tile_starts(513, 473, 316).numpy() + 1, [1, 41])
    np.testing.assert_array_equal(sw.tile_starts(473, 473, 316).numpy(), [0])


def test_padding_values_per_branch():
    small = tf.fill([5, 7, 3], tf.constant(9, tf.uint8))
    tiles, layout = sw.make_tiles(small, (9, 9), MEAN)  # fits: exact mean (pre_img.m pads singles)
    assert tiles.shape == (1, 9, 9, 3)
    np.testing.assert_allclose(tiles[0, 8, 8].numpy(), MEAN, rtol=1e-6)
    np.testing.assert_array_equal(tiles[0, :5, :7].numpy(), 9)
    wide = tf.fill([5, 12, 3], tf.constant(9, tf.uint8))
    tiles, layout = sw.make_tiles(wide, (9, 9), MEAN)  # tiled: uint8-rounded mean 124/117/104
    assert tiles.shape == (2, 9, 9, 3)
    np.testing.assert_array_equal(tiles[0, 8, 0].numpy(), [124, 117, 104])
    np.testing.assert_array_equal(layout.col_starts.numpy(), [0, 3])  # stride ceil(6) = 6 -> snapped


def test_blend_averages_overlaps_by_count():
    # Two 1x4 tiles on a 1x6 strip at cols 0 and 2: the middle columns are averaged.
    probs = tf.constant([[[[1.0], [1.0], [1.0], [1.0]]], [[[3.0], [3.0], [3.0], [3.0]]]])
    layout = sw.TileLayout(tf.constant([0]), tf.constant([0, 2]), (1, 6), (1, 5))
    np.testing.assert_allclose(sw.blend(probs, layout).numpy()[0, :, 0], [1, 1, 2, 2, 3])


def test_flip_is_merged_in_logit_space():
    z = np.array([[[[2.0, 0.0], [0.0, 1.0]]], [[[0.0, 3.0], [1.0, 0.0]]]], np.float32)  # tile, mirror
    got = sw.merge_flip(tf.constant(z), True).numpy()
    summed = z[0] + z[1][:, ::-1]  # the mirror image's logits flipped back, then added
    want = np.exp(summed) / np.exp(summed).sum(-1, keepdims=True)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    averaged = (_softmax(z[0]) + _softmax(z[1][:, ::-1])) / 2  # what semseg/mmseg do instead
    assert np.abs(got[0] - averaged).max() > 0.05


def _softmax(x):
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("padded, image, crop", [((20, 31), (17, 31), 9), ((9, 9), (5, 7), 9),
                                                 ((30, 12), (30, 10), 9), ((25, 25), (25, 25), 9)])
def test_tile_by_tile_sums_equal_the_segment_sums(padded, image, crop):
    # Tiles fed one at a time (as the protocol does while batches finish) give the floats of the
    # segment-sum blend over all tiles at once, bit for bit: same additions in the same order.
    rows, cols = sw.tile_starts(padded[0], crop, 6), sw.tile_starts(padded[1], crop, 6)
    layout = sw.TileLayout(rows, cols, tuple(tf.constant(v) for v in padded),
                           tuple(tf.constant(v) for v in image))
    n = len(rows) * len(cols)
    probs = tf.constant(np.random.default_rng(n).random((n, crop, crop, 5)).astype(np.float32))
    state = sw.blend_start(layout, crop, 5)
    for t in range(n):
        state = sw.blend_add(state, probs[t], tf.constant(t), layout)
    got = sw.blend_finish(state, layout, crop, crop).numpy()
    want = reference.blend(probs, layout).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sw.blend(probs, layout).numpy(), want)
