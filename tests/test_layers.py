"""Caffe Interp, the name mapping, Caffe pooling sizes and sync BN's moments, pinned to hand
computations and derived bounds."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from support.bounds import dot_error_bound, gamma
from support.prototxt import PRESET_PROTOTXTS, prototxt_layers
from psp_tf import build_pspnet
from psp_tf import layers as psp_layers


def caffe_interp_loop(x, out_h, out_w):
    """A literal transcription of caffe_cpu_interp2 (src/caffe/util/interp.cpp) for [H, W, C]."""
    in_h, in_w = x.shape[:2]
    out = np.zeros((out_h, out_w, x.shape[2]), np.float32)
    rh = np.float32(in_h - 1) / np.float32(out_h - 1) if out_h > 1 else np.float32(0)
    rw = np.float32(in_w - 1) / np.float32(out_w - 1) if out_w > 1 else np.float32(0)
    for h2 in range(out_h):
        h1r = np.float32(rh * h2)
        h1 = int(h1r)
        h1p = 1 if h1 < in_h - 1 else 0
        h1l = np.float32(h1r - h1)
        h0l = np.float32(1) - h1l
        for w2 in range(out_w):
            w1r = np.float32(rw * w2)
            w1 = int(w1r)
            w1p = 1 if w1 < in_w - 1 else 0
            w1l = np.float32(w1r - w1)
            w0l = np.float32(1) - w1l
            out[h2, w2] = (h0l * (w0l * x[h1, w1] + w1l * x[h1, w1 + w1p])
                           + h1l * (w0l * x[h1 + h1p, w1] + w1l * x[h1 + h1p, w1 + w1p]))
    return out


def _interp_bound(x, size):
    """Two float32 interps of x with the same weights differ by at most gamma_8 interp(|x|) (+ a tiny
    floor for exact zeros, where assert_array_less needs room)."""
    return dot_error_bound(8, caffe_interp_loop(np.abs(x), *size)) + np.finfo(np.float32).tiny


def test_name_mapping_is_injective_over_the_three_prototxts():
    for path in PRESET_PROTOTXTS.values():
        names = [name for name, _, _ in prototxt_layers(path)]
        mapped = [psp_layers.keras_name(n) for n in names]
        assert len(set(names)) == len(names)
        assert len(set(mapped)) == len(mapped), path
        assert all("/" not in m for m in mapped)
    assert psp_layers.keras_name("conv1_1_3x3_s2/bn") == "conv1_1_3x3_s2_bn"
    assert psp_layers.keras_name("conv5_3_pool6_conv/relu") == "conv5_3_pool6_conv_relu"


def test_interp_matrix_by_hand():
    # 3 -> 5: ratio (3-1)/(5-1) = 0.5, so outputs sample 0, 0.5, 1, 1.5, 2.
    np.testing.assert_array_equal(psp_layers.interp_matrix(3, 5), np.array(
        [[1, 0, 0], [.5, .5, 0], [0, 1, 0], [0, .5, .5], [0, 0, 1]], np.float32))
    # 2 -> 4 (even): ratio 1/3; output 1 samples 1/3, output 2 samples 2/3.
    m = psp_layers.interp_matrix(2, 4)
    np.testing.assert_allclose(m, [[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]], rtol=1e-6)
    # A 1-pixel input broadcasts; a 1-pixel output takes the first pixel (rheight = 0).
    np.testing.assert_array_equal(psp_layers.interp_matrix(1, 4), np.ones((4, 1), np.float32))
    np.testing.assert_array_equal(psp_layers.interp_matrix(4, 1), [[1, 0, 0, 0]])


@pytest.mark.parametrize("in_size,out_size", [(60, 473), (90, 713)])
def test_zoom_factor_8_samples_input_at_i_over_8(in_size, out_size):
    # Caffe's zoom_factor 8: out = in + (in - 1) * 7 and rheight = 1/8 exactly.
    assert out_size == in_size + (in_size - 1) * 7
    m = psp_layers.interp_matrix(in_size, out_size)
    for i in (0, 1, 7, 8, 9, 100, out_size - 2, out_size - 1):
        expected = np.zeros(in_size, np.float32)
        low, frac = divmod(i, 8)
        expected[low] += 1 - frac / 8
        if frac:
            expected[low + 1] += frac / 8
        np.testing.assert_array_equal(m[i], expected)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("shape,size", [((7, 5), (13, 9)), ((6, 6), (11, 16)), ((8, 10), (3, 4)),
                                        ((1, 1), (6, 6)), ((2, 3), (6, 6))])
def test_resize_matches_caffe_loop_and_tf_align_corners(shape, size):
    x = np.random.default_rng(0).normal(size=(*shape, 3)).astype(np.float32)
    ours = np.asarray(psp_layers.resize_align_corners(tf.constant(x[None]), size))[0]
    # The same float32 weights (>= 0) and at most 2x2 nonzero taps in both: each within gamma_4 of
    # the exact sum of |terms|, so within gamma_8 of each other.
    np.testing.assert_array_less(np.abs(ours - caffe_interp_loop(x, *size)), _interp_bound(x, size))
    tf_v1 = tf.compat.v1.image.resize_bilinear(x[None], size, align_corners=True).numpy()[0]
    # TF v1 computes its own float32 source coordinates (their fraction off by up to u * size) and lerps.
    np.testing.assert_allclose(ours, tf_v1, rtol=0, atol=gamma(8 + 2 * max(size)) * np.abs(x).max())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_resize_in_low_precision(dtype):
    x = np.random.default_rng(1).uniform(-4, 4, size=(1, 9, 9, 2)).astype(np.float32)
    low = psp_layers.resize_align_corners(tf.cast(x, dtype), (17, 17))
    assert low.dtype == dtype
    # Roundings to the low-precision unit u, each of at most max|x| (weights >= 0 summing to 1): the
    # input, the weights of both passes, and per pass product, sum and result even where a backend
    # accumulates in low precision: 9 u max|x| (bfloat16: u = 2^-8, float16: u = 2^-11).
    unit = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}[dtype]
    np.testing.assert_allclose(tf.cast(low, tf.float32).numpy()[0], caffe_interp_loop(x[0], 17, 17),
                               rtol=0, atol=9 * unit * np.abs(x).max())


def test_interp_layer_under_xla_and_in_a_savedmodel(tmp_path):
    inputs = keras.Input((5, 7, 2))
    model = keras.Model(inputs, psp_layers.Interp((9, 13))(inputs))
    x = np.random.default_rng(2).normal(size=(2, 5, 7, 2)).astype(np.float32)
    expected = np.stack([caffe_interp_loop(xi, 9, 13) for xi in x])
    xla = tf.function(lambda t: model(t), jit_compile=True)
    bound = np.stack([_interp_bound(xi, (9, 13)) for xi in x])
    np.testing.assert_array_less(np.abs(xla(x).numpy() - expected), bound)
    export_dir = os.path.join(tmp_path, "saved")
    model.export(export_dir, verbose=False)
    restored = tf.saved_model.load(export_dir)
    np.testing.assert_array_less(np.abs(restored.serve(x).numpy() - expected), bound)


def test_caffe_pool_ceil_rule():
    # pool1_3x3_s2 (k3 s2 p1): ceil equals floor at the crops' 237 and 357, not at even sizes.
    assert psp_layers.caffe_pool_output_size(237, 3, 2, 1) == 119
    assert psp_layers.caffe_pool_output_size(357, 3, 2, 1) == 179
    assert psp_layers.caffe_pool_output_size(236, 3, 2, 1) == 119  # floor would give 118
    # The last window must start inside the image or the leading pad: 4 -> ceil(3/2)+1 = 3 -> 3.
    assert psp_layers.caffe_pool_output_size(4, 3, 2, 1) == 3
    # k2 s2 p1 on 4: ceil(4/2)+1 = 3, but window 2 starts at 4-1=3 >= 4+1? no: kept at 3.
    assert psp_layers.caffe_pool_output_size(4, 2, 2, 1) == 3
    # k2 s2 p1 on 3: ceil(3/2)+1 = 3, (3-1)*2 = 4 >= 3+1 -> 2.
    assert psp_layers.caffe_pool_output_size(3, 2, 2, 1) == 2


@pytest.mark.parametrize("size", [9, 10, 236])
def test_max_pool_caffe_matches_clipped_windows(size):
    x = np.random.default_rng(3).uniform(0, 1, size=(1, size, size, 2)).astype(np.float32)
    inputs = keras.Input((size, size, 2))
    out = keras.Model(inputs, psp_layers.max_pool_caffe(inputs, 3, 2, 1, "pool"))(x).numpy()[0]
    pooled = psp_layers.caffe_pool_output_size(size, 3, 2, 1)
    expected = np.zeros((pooled, pooled, 2), np.float32)
    for i in range(pooled):
        for j in range(pooled):
            hs, ws = max(i * 2 - 1, 0), max(j * 2 - 1, 0)
            he, we = min(i * 2 - 1 + 3, size), min(j * 2 - 1 + 3, size)
            expected[i, j] = x[0, hs:he, ws:we].max(axis=(0, 1))
    np.testing.assert_array_equal(out, expected)


def _offset_channels(shape, seed):
    """float32 activations of std 1 whose channels sit at means 0, 10, 100 and 1000 (cancellation cases)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 1.0, shape) + np.array([0.0, 10.0, 100.0, 1000.0])).astype(np.float32)


def moments_error_bounds(x):
    """Per channel, bounds on |computed − exact| mean and variance of the two-pass moments of float32 `x`.

    The mean is an n-term sum and a division: |δ| ≤ γ_{n+1}·mean|x|. The deviations x − m̂ are then
    exact or rounded once, their squares once more, and their sum within γ_n, so the variance is
    within (γ_n + 3ε)·var of Σ(x − m̂)²/n = var + δ² (the deviations from the exact mean sum to 0).
    """
    x64 = x.reshape(-1, x.shape[-1]).astype(np.float64)
    n = x64.shape[0]
    delta = gamma(n + 1) * np.abs(x64).mean(0)
    var = x64.var(0)
    return delta, delta ** 2 + (gamma(n) + 3 * 2.0 ** -24) * (var + delta ** 2)


def test_synced_moments_take_the_variance_about_the_mean():
    x = _offset_channels((2, 16, 16, 4), seed=0)
    x64 = x.astype(np.float64)
    mean, variance = psp_layers.synced_moments(tf.constant(x), [0, 1, 2])  # one replica: the default context
    mean_bound, variance_bound = moments_error_bounds(x)
    assert np.all(np.abs(mean.numpy() - x64.mean((0, 1, 2))) <= mean_bound)
    error = np.abs(variance.numpy() - x64.var((0, 1, 2)))
    assert np.all(error <= variance_bound), (error, variance_bound)
    # The data is a real cancellation case: Keras' synchronised formula, E[x²] − E[x]², misses the
    # variance of the channel at 1000 by far more than the bound (by most of the variance).
    _, keras_variance = keras.ops.moments(tf.constant(x), axes=[0, 1, 2], synchronized=True)
    keras_error = np.abs(keras_variance.numpy() - x64.var((0, 1, 2)))
    assert keras_error[3] > 10 * variance_bound[3], (keras_error, variance_bound)


def test_sync_batch_norm_normalises_with_the_batch_statistics_and_round_trips():
    x = _offset_channels((2, 8, 8, 4), seed=1)
    layer = psp_layers.SyncBatchNormalization(epsilon=psp_layers.BN_EPSILON, momentum=psp_layers.BN_MOMENTUM)
    y = layer(tf.constant(x), training=True).numpy()
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + psp_layers.BN_EPSILON)
    # Applying BN is x·a + (β − m·a) with a = γ/√(σ² + ε_BN): about 7 roundings of terms as large as
    # |x| or |m| (a itself within 2 ulps), so each channel is within 8·2⁻²⁴·2·max|x|·a of the exact
    # value. Keras' synchronized=True BN misses the channels at 100 and 1000 by 6e-3 and ~1 here.
    scale = 1.0 / np.sqrt(x64.var((0, 1, 2)) + psp_layers.BN_EPSILON)
    bound = 8 * 2.0 ** -24 * 2 * np.abs(x64).max((0, 1, 2)) * scale
    error = np.abs(y - expected).max((0, 1, 2))
    assert np.all(error <= bound), (error, bound)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is psp_layers.SyncBatchNormalization and clone.synchronized
    assert clone.epsilon == psp_layers.BN_EPSILON and clone.momentum == psp_layers.BN_MOMENTUM


TWO_REPLICAS = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from psp_tf import layers
x = np.load(sys.argv[1])
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
halves = strategy.experimental_distribute_values_from_function(
    lambda context: tf.constant(x[context.replica_id_in_sync_group::2]))
moments = strategy.run(tf.function(lambda h: layers.synced_moments(h, [0, 1, 2])), args=(halves,))
np.save(sys.argv[2], np.stack([np.stack([v.numpy() for v in strategy.experimental_local_results(m)])
                               for m in moments]))
"""


@pytest.mark.slow  # a process of its own: logical devices exist only before TensorFlow initialises
def test_synced_moments_over_two_replicas_are_the_whole_batchs(tmp_path):
    x = _offset_channels((4, 16, 16, 4), seed=2)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, str(tmp_path / "x.npy"), str(tmp_path / "m.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (means, variances), x64 = np.load(tmp_path / "m.npy"), x.astype(np.float64)
    mean_bound, variance_bound = moments_error_bounds(x)
    for replica in range(2):  # each replica holds every other image, and both get the whole batch's moments
        assert np.all(np.abs(means[replica] - x64.mean((0, 1, 2))) <= mean_bound)
        assert np.all(np.abs(variances[replica] - x64.var((0, 1, 2))) <= variance_bound), variances[replica]


@pytest.mark.slow  # a .keras save and load of a whole network, ~2 s
def test_a_sync_bn_pspnet_round_trips_through_keras_with_the_two_pass_layer(tmp_path):
    model = build_pspnet("tiny", sync_bn=True)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    norms = [layer for layer in restored.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is psp_layers.SyncBatchNormalization for layer in norms)
    assert restored.build_options["sync_bn"] is True
