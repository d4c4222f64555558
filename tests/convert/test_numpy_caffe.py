"""The NumPy Caffe reference against hand computations on tiny arrays (docs/caffe_reference.md §2)."""

import numpy as np
import pytest

from support.bounds import dot_error_bound
from psp_tf.convert import numpy_caffe as nc
from psp_tf.convert.netspec import CaffeLayer
from psp_tf.layers import interp_matrix


def _interp_params(**kw):
    p = {"height": 0, "width": 0, "zoom_factor": 1, "shrink_factor": 1, "pad_beg": 0, "pad_end": 0}
    p.update(kw)
    p.update(has_zoom="zoom_factor" in kw, has_shrink="shrink_factor" in kw,
             has_height="height" in kw, has_width="width" in kw)
    return p


def _naive_conv(x, w, stride, pad, dilation):
    """A seven-loop cross-correlation straight from the definition, float64."""
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((o, ho, wo))
    for oc in range(o):
        for y in range(ho):
            for xx in range(wo):
                for ic in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            r, s = y * stride - pad + i * dilation, xx * stride - pad + j * dilation
                            if 0 <= r < h and 0 <= s < wd:
                                out[oc, y, xx] += x[ic, r, s] * w[oc, ic, i, j]
    return out


def test_conv_dilation_by_hand():
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    w = np.ones((1, 1, 3, 3), np.float32)
    out = nc.convolution(x, w, None, pad=(2, 2), dilation=(2, 2))
    assert out.shape == (1, 1, 5, 5)
    # Centre (2, 2) sums rows/cols {0, 2, 4}: 0+2+4+10+12+14+20+22+24 = 108.
    assert out[0, 0, 2, 2] == 108
    # Corner (0, 0) sees only rows/cols {0, 2}: 0+2+10+12 = 24.
    assert out[0, 0, 0, 0] == 24


@pytest.mark.parametrize("stride,pad,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 4, 4), (3, 1, 2)])
def test_conv_matches_definition(stride, pad, dilation):
    rng = np.random.default_rng(stride * 10 + pad)
    x = rng.standard_normal((1, 3, 11, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = nc.convolution(x, w, b, (stride, stride), (pad, pad), (dilation, dilation))
    want = _naive_conv(x[0].astype(np.float64), w, stride, pad, dilation) + b[:, None, None]
    # float32 sums of 3*3*3 products plus the bias, in whatever order BLAS takes: gamma_28 sum|terms|.
    abs_sum = _naive_conv(np.abs(x[0]).astype(np.float64), np.abs(w), stride, pad, dilation) + np.abs(b)[:, None, None]
    assert (np.abs(out[0] - want) <= dot_error_bound(3 * 3 * 3 + 1, abs_sum)).all()


def test_pool_ceil_rule_sizes():
    assert nc.pool_output_size(237, 3, 2, 1) == 119  # pool1 at 473
    assert nc.pool_output_size(357, 3, 2, 1) == 179  # pool1 at 713
    assert nc.pool_output_size(4, 3, 2, 0) == 2  # ceil((4-3)/2)+1; floor would give 1
    assert nc.pool_output_size(6, 3, 2, 1) == 4  # ceil(5/2)+1 = 4, last window starts at 5 < 6+1
    assert nc.pool_output_size(5, 2, 2, 1) == 3  # ceil(5/2)+1 = 4 starts at 6 >= 5+1: dropped


def test_max_pool_ceil_window_clipped():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) - 8  # negatives: padding must never win
    out = nc.pooling(x, "MAX", (3, 3), (2, 2))
    # Windows rows/cols [0:3] and [2:4] (the ceil window, clipped to the image).
    np.testing.assert_array_equal(out[0, 0], [[2, 3], [6, 7]])


def test_ave_pool_divisor_counts_padding():
    x = np.ones((1, 1, 3, 3), np.float32)
    out = nc.pooling(x, "AVE", (3, 3), (1, 1), (1, 1))
    # Every window lies inside H + pad, so the divisor is 9 even where it covers padding.
    np.testing.assert_allclose(out[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9, rtol=1e-6)


def test_ave_pool_ceil_window_divisor_clipped_at_h_plus_pad():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = nc.pooling(x, "AVE", (3, 3), (2, 2))
    # Second window spans rows/cols 2..3 only (hend = min(2+3, 4+0) = 4): divisor 2 per axis.
    np.testing.assert_allclose(out[0, 0], [[5, 6.5], [11, 12.5]], rtol=1e-6)


def test_interp_sizes_all_cases():
    assert nc.interp_output_size(60, 0, _interp_params(zoom_factor=8)) == 473
    assert nc.interp_output_size(90, 0, _interp_params(zoom_factor=8)) == 713
    assert nc.interp_output_size(473, 0, _interp_params(shrink_factor=8)) == 60
    assert nc.interp_output_size(1, 60, _interp_params(height=60, width=60)) == 60
    assert nc.interp_output_size(473, 0, _interp_params(shrink_factor=8, zoom_factor=2)) == 119
    assert nc.interp_output_size(10, 0, _interp_params(zoom_factor=2, pad_beg=-1, pad_end=-1)) == 15
    with pytest.raises(ValueError):
        nc.interp_output_size(10, 0, _interp_params())


def test_interp_values_align_corners():
    x = np.array([[0, 1], [2, 3]], np.float32).reshape(1, 1, 2, 2)
    out = nc.interp(x, _interp_params(zoom_factor=2))
    np.testing.assert_allclose(out[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    one = nc.interp(np.full((1, 2, 1, 1), 7, np.float32), _interp_params(height=3, width=4))
    np.testing.assert_array_equal(one, np.full((1, 2, 3, 4), 7))  # 1x1 broadcasts (rheight = 0)
    cropped = nc.interp(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4),
                        _interp_params(height=2, width=2, pad_beg=-1, pad_end=-1))
    np.testing.assert_array_equal(cropped[0, 0], [[5, 6], [9, 10]])  # pad_beg -1 crops one pixel


def test_interp_zoom8_matches_interp_matrix():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 60, 60)).astype(np.float32)
    out = nc.interp(x, _interp_params(zoom_factor=8))
    m = interp_matrix(60, 473).astype(np.float64)
    # The same float32 weights; each output is a float32 sum of 2x2 weighted taps: gamma_4 sum|terms|.
    # m @ x @ m^T in float64 (two matmuls: einsum's unoptimised triple loop took seconds for the same sum).
    bound = dot_error_bound(4, m @ np.abs(x[0]) @ m.T)
    assert (np.abs(out[0] - m @ x[0] @ m.T) <= bound).all()
    # zoom 8 samples input i/8 exactly: every 8th output row is an input row.
    np.testing.assert_array_equal(out[0, :, ::8, ::8], x[0])


def test_bn_relu_eltwise_concat_input():
    x = np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1)
    ones = np.ones((1, 2, 1, 1), np.float32)
    y = nc.batch_norm(x, 2 * ones, ones, ones, 3 * ones)
    np.testing.assert_allclose(y.ravel(), [1.0, 1 + 4 / np.sqrt(3 + 1e-5)], rtol=1e-6)
    np.testing.assert_array_equal(nc.relu(np.array([-1.0, 2.0], np.float32)), [0, 2])
    np.testing.assert_array_equal(nc.eltwise([x, x], "SUM", [1.0, -2.0]).ravel(), [-1, -3])
    image = np.zeros((1, 1, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    np.testing.assert_allclose(nc.caffe_input(image, (123.68, 116.779, 103.939)).ravel(),
                               [50 - 103.939, 100 - 116.779, 200 - 123.68], rtol=1e-6)  # BGR


def test_run_net_skips_data_and_loss_layers_and_runs_in_place():
    w = np.full((1, 1, 1, 1), 2, np.float32)
    layers = [
        CaffeLayer("data", "ImageSegData", [], ["data", "label"]),
        CaffeLayer("conv", "Convolution", ["data"], ["conv"], [w],
                   {"bias_term": False, "stride": (1, 1), "pad": (0, 0), "dilation": (1, 1)}),
        CaffeLayer("conv/relu", "ReLU", ["conv"], ["conv"], [], {"negative_slope": 0.0}),
        CaffeLayer("loss", "SoftmaxWithLoss", ["conv", "label"], ["loss"]),
    ]
    x = np.array([-1.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    seen = {}
    out = nc.run_net(layers, {"data": x}, ["conv"], callback=lambda name, y: seen.setdefault(name, y.ravel()))
    np.testing.assert_array_equal(out["conv"].ravel(), [0, 4])
    np.testing.assert_array_equal(seen["conv"], [-2, 4])  # the conv layer's own output, before the ReLU
    assert list(seen) == ["conv", "conv/relu"]
    assert nc.needed_layers(layers, {"data"}, ["conv"]) == [1, 2]
