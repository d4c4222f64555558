"""MATLAB imresize / round / resized sizes: psp_tf.evaluation.resize against the NumPy transcription."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from support import matlab_reference as ref
from support.bounds import gamma
from psp_tf.evaluation import resize


def test_matlab_round_halves_away_from_zero():
    x = tf.constant([0.5, 1.5, 2.5, -0.5, -2.5, 1024.5, 2.49])
    np.testing.assert_array_equal(resize.matlab_round(x).numpy(), [1, 2, 3, -1, -3, 1025, 2])


@pytest.mark.parametrize("hw, long_side, expected", [
    ((1024, 2048), 2049, (1025, 2049)),  # Python's round would give 1024
    ((375, 500), 513, (385, 513)),  # the VOC example of docs/caffe_reference.md §3.4
    ((500, 375), 513, (513, 385)),
    ((300, 300), 257, (257, 257)),
    ((1024, 2048), 0.5 * 2048 + 1, (513, 1025)),
    ((1024, 2048), 1.75 * 2048 + 1, (1793, 3585)),
])
def test_scaled_size_matches_eval_sub(hw, long_side, expected):
    got = resize.scaled_size(tf.constant(hw[0]), tf.constant(hw[1]), long_side)
    assert tuple(int(v) for v in got) == expected


def test_contributions_known_values():
    # 4 -> 2 halves: width-4 antialiased triangle, centre u = 1.5 (1-based): taps 0..3 weights
    # 1/8, 3/8, 3/8, 1/8 with the tap at 0 clamped onto pixel 1.
    w, i = resize.contributions(4, 2)
    dense = np.zeros((2, 4))
    np.add.at(dense, (np.repeat(np.arange(2), w.shape[1]), i.numpy().ravel()), w.numpy().ravel())
    np.testing.assert_allclose(dense, [[0.5, 0.375, 0.125, 0.0], [0.0, 0.125, 0.375, 0.5]])


@pytest.mark.parametrize("src, dst", [((7, 9), (7, 9)), ((10, 13), (23, 17)), ((40, 31), (13, 19)),
                                      ((33, 20), (17, 41)), ((1025, 2049), (1024, 2048)), ((1, 5), (3, 2))])
def test_uint8_and_float_match_reference(src, dst):
    rng = np.random.default_rng(sum(src) + sum(dst))
    img = rng.integers(0, 256, src + (3,), dtype=np.uint8)
    if src[0] < 100:  # the full-size case checks floats only (the loop reference is slow)
        got = resize.imresize(tf.constant(img), *dst).numpy()
        want = ref.imresize(img, *dst)
        np.testing.assert_array_equal(got, want)
    prob = rng.random(src + (2,)).astype(np.float32)
    got = resize.imresize(tf.constant(prob), *dst).numpy()
    want = ref.imresize(prob, *dst) if src[0] < 100 else _fast_float_reference(prob, dst)
    # Each pass is a float32 sum over P taps of float32-rounded weights (>= 0, summing to 1), and the
    # reference rounds each pass to float32: gamma_{P+2} per pass, relative to max|x|.
    taps = sum(int(resize.contributions(n, m)[0].shape[1]) for n, m in zip(src, dst))
    np.testing.assert_allclose(got, want, rtol=0, atol=gamma(taps + 4) * np.abs(prob).max())


def _fast_float_reference(a, dst):
    """Dense-matrix form of the reference for large float inputs."""
    for dim in (0, 1):
        w, i = ref.contributions(a.shape[dim], dst[dim], dst[dim] / a.shape[dim])
        m = np.zeros((dst[dim], a.shape[dim]))
        np.add.at(m, (np.repeat(np.arange(dst[dim]), w.shape[1]), i.ravel() - 1), w.ravel())
        a = np.moveaxis(np.tensordot(m, np.moveaxis(a.astype(np.float64), dim, 0), 1), 0, dim)
    return a


def test_enlarging_is_half_pixel_bilinear():
    # Without shrinking MATLAB's bilinear = half-pixel-centre bilinear with replicated borders, which is
    # what OpenCV INTER_LINEAR and tf.image.resize(bilinear, antialias=False) compute.
    rng = np.random.default_rng(0)
    x = rng.random((11, 14, 3)).astype(np.float32)
    got = resize.imresize(tf.constant(x), 25, 31).numpy()
    np.testing.assert_allclose(got, cv2.resize(x, (31, 25), interpolation=cv2.INTER_LINEAR), atol=1e-5)
    np.testing.assert_allclose(got, tf.image.resize(x, (25, 31), "bilinear").numpy(), atol=1e-5)


def test_integer_shrink_is_area_average():
    # Shrinking by an integer factor 2 the widened triangle covers 4 pixels with 1/8,3/8,3/8,1/8:
    # not INTER_AREA's box (1/2, 1/2), but both preserve a constant and a linear ramp's mean.
    ramp = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (4, 1, 1))
    got = resize.imresize(tf.constant(ramp), 2, 4).numpy()[..., 0]
    area = cv2.resize(ramp[..., 0], (4, 2), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(got[:, 1:3], area[:, 1:3], atol=1e-6)  # interior: same means
    np.testing.assert_allclose(got[0], [0.625, 2.5, 4.5, 6.375], atol=1e-6)  # borders clamp


def test_uint8_rounds_between_dimensions():
    # A 1x2 -> 2x1... pattern where rounding after the first pass matters: rows first on a tie.
    img = np.array([[[0], [1]], [[1], [2]]], np.uint8)
    got = resize.imresize(tf.constant(img), 1, 1).numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref.imresize(img, 1, 1))
    # rows: (0+1)/2 = 0.5 -> 1 and (1+2)/2 = 1.5 -> 2 ; cols: (1+2)/2 = 1.5 -> 2 (float: 1.0 -> 1)
    assert int(got[0, 0, 0]) == 2


@pytest.mark.parametrize("src, dst", [((40, 31), (97, 83)), ((97, 83), (40, 31)), ((13, 50), (61, 119)),
                                      ((61, 81), (90, 119)), ((5, 7), (5, 7)), ((1, 9), (4, 3))])
def test_rows_of_a_resize_are_the_same_floats(src, dst):
    # Strips of output rows from the input rows they read equal the whole resize's rows up to float32
    # rounding, whichever dimension imresize.m puts first ((61, 81) -> (90, 119) goes cols first).
    # Not bit for bit: each strip's band matrices have their own shapes, and a matmul's summation
    # order may follow them. Bound: each result sums at most Pr then Pc nonzero products of
    # float32-rounded weights >= 0 and inputs >= 0, so it is within gamma_{Pr+Pc+2}(u) of the exact
    # value relative to that value (<= max x); two of them differ by twice that, <= bounds.gamma(n).
    rng = np.random.default_rng(sum(src) + sum(dst))
    x = tf.constant(rng.random(src + (3,)).astype(np.float32))
    whole = resize.imresize(x, *dst).numpy()
    plan = resize.resize_plan(src[0], src[1], dst[0], dst[1])
    taps = sum(int(resize.contributions(n, m)[0].shape[1]) for n, m in zip(src, dst))
    bound = gamma(taps + 2) * float(np.max(x))
    # Traced once, as full_size runs it (eagerly each call would rebuild the band matrices op by op).
    strip = tf.function(lambda a, b: resize.imresize_rows(x, plan, a, b), autograph=False)
    for rows in (1, 3, dst[0]):
        for start in range(0, dst[0], rows):
            stop = min(start + rows, dst[0])
            got = strip(tf.constant(start), tf.constant(stop)).numpy()
            np.testing.assert_allclose(got, whole[start:stop], rtol=0, atol=bound)
