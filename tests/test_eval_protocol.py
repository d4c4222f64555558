"""psp_tf.evaluation.protocol.predict against the NumPy transcription of the author's MATLAB protocol.

One image per branch of eval_sub.m / scale_process.m: smaller than the crop, tiles in one direction,
both directions, portrait, landscape, grey, multi-scale, no flip. The issue's targets are
max |Δprob| <= 0.02 and argmax agreement >= 99.5%; the two implementations agree far more closely
(float32 rounding only), so the test also pins the bound that float32 allows (see _float32_bound).
"""

import numpy as np
import pytest
import tensorflow as tf

import eval_matlab_reference as ref
import psp_tf
from conftest import gamma
from psp_tf.errors import UserError
from psp_tf.evaluation import protocol, resize, sliding_window


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def tiny_model(seed=0):
    """The tiny PSPNet with random weights, the classifier scaled so logits are O(1) (random BN-free
    statistics otherwise give logits in the hundreds, where MATLAB's exp would overflow)."""
    import keras
    keras.utils.set_random_seed(seed)
    model = psp_tf.build_pspnet("tiny")
    conv6 = model.get_layer("conv6")
    kernel, bias = conv6.get_weights()
    conv6.set_weights([kernel * 0.01, bias + np.arange(len(bias)) * 0.1])
    return model


def _reference(model, image, scales, flip=True, tiles=None):
    """The MATLAB transcription's (labels, probabilities); the tiles it fed the net go to `tiles`."""
    config = model.psp_config

    def net(x):
        if tiles is not None:
            tiles.append(x)
        return model(x[None], training=False).numpy()[0]

    return ref.eval_image(net, image, config.num_classes, scales, config.base_size,
                          config.crop_size[0], config.mean, flip)


def _logits(model, tiles, batch):
    """Logits of `tiles` as the protocol's traced network computes them, `batch` tiles a call."""
    network = protocol.network_function(model)
    return np.concatenate([network(np.stack(tiles[i:i + batch])).numpy() for i in range(0, len(tiles), batch)])


def _float32_bound(logit_noise, num_classes, num_scales):
    """Max |Δprob| float32 allows between two evaluations whose logits differ by `logit_noise`.

    The network's float32 result depends on how tiles are batched (oneDNN and Eigen pick kernels by
    shape), so its noise is measured on the very tiles; flip adds two logit maps (2x) and softmax moves
    a probability by at most 2 max|Δz| (dp_k = p_k (dz_k - sum_j p_j dz_j)). Every later stage (tile
    average, imresize with weights >= 0 summing to 1, renormalisation, scale average) is non-expansive,
    and their own float32 arithmetic is a few dozen roundings of values <= 1: softmax (exp, K terms,
    divide), blend (<= 4 tiles, divide), two resize passes (<= 6 taps each at these scales), the
    renormalising sum and divide, the scale average.
    """
    roundings = (num_classes + 3) + 5 + 2 * (6 + 1) + (num_classes + 1) + (num_scales + 1)
    return 4 * logit_noise + gamma(roundings)


def _image(shape, seed):
    rng = np.random.default_rng(seed)
    # Smooth blobs plus noise, so that labels form regions and antialiasing has something to do.
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[..., None] / (7 + 5 * rng.random(3))) * np.cos(yy[..., None] / 11)
    noise = rng.normal(0, 20, (h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    return img if len(shape) == 3 else img[..., 0]


# (image shape, scales, flip): the tiny preset has crop 137, base size 160 (long side 161 at s=1).
CASES = {
    "smaller_than_crop": ((90, 120, 3), (0.75,), True),  # 91x121: one padded tile, exact-mean pad
    "landscape_one_direction": ((100, 200, 3), (1.0,), True),  # 81x161: rows padded, 1x2 tiles
    "both_directions_shrink": ((320, 300, 3), (1.0,), True),  # 161x151: 2x2 tiles, antialiased
    "portrait": ((300, 120, 3), (1.0,), True),  # 161x64: 2x1 tiles
    "grey": ((150, 170), (1.0,), True),  # 142x161 grey replicated: 2x2
    "multi_scale": ((120, 160, 3), (0.5, 1.0, 1.75), True),  # 61x81 single, 121x161 1x2, 211x281 2x3
    "no_flip": ((100, 200, 3), (1.0,), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_predict_matches_matlab_reference(model, name):
    shape, scales, flip = CASES[name]
    image = _image(shape, seed=len(name))
    got = protocol.predict(model, image, scales=scales, flip=flip, batch_size=3)
    tiles = []
    want_labels, want_probs = _reference(model, image, scales, flip, tiles)
    assert got.labels.shape == shape[:2] and got.labels.dtype == np.int32
    assert got.probabilities.shape == shape[:2] + (4,) and got.probabilities.dtype == np.float32
    delta = np.abs(got.probabilities - want_probs).max()
    agreement = np.mean(got.labels == want_labels)
    assert delta <= 0.02 and agreement >= 0.995  # the targets
    # predict runs each tile with its mirror image (batch_size 3 -> 1 pair a call); the reference one
    # tile at a time, eagerly.
    noise = np.abs(_logits(model, tiles, 2 if flip else 3) - _logits(model, tiles, 1)).max()
    bound = _float32_bound(noise, 4, len(scales))
    assert delta <= bound, (delta, bound)
    # Where the reference's top two classes are further apart than twice the bound, argmax must agree.
    top2 = np.sort(want_probs, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    np.testing.assert_array_equal(got.labels[decided], want_labels[decided])
    assert len(np.unique(want_labels)) > 1  # a fixture that can tell labels apart
    # The renormalised maps sum to 1 up to the K-term sum, divide and scale average.
    np.testing.assert_allclose(got.probabilities.sum(-1), 1.0, rtol=0, atol=gamma(4 + len(scales) + 2))


def test_batch_size_does_not_change_results(model):
    image = _image((320, 300, 3), seed=5)
    a = protocol.predict(model, image, batch_size=1)
    b = protocol.predict(model, image, batch_size=8)
    # Only the network's batching differs (pairs vs 4 pairs a call): measured on predict's own tiles.
    settings = protocol.settings_for(model)
    size = resize.scaled_size(tf.constant(image.shape[0]), tf.constant(image.shape[1]), settings.base_size + 1)
    grid, _ = sliding_window.make_tiles(resize.imresize(tf.constant(image), *size), settings.crop_size, settings.mean)
    tiles = [t for tile in grid.numpy() for t in (tile, tile[:, ::-1])]
    noise = np.abs(_logits(model, tiles, 8) - _logits(model, tiles, 2)).max()
    bound = _float32_bound(noise, 4, 1)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=bound)
    top2 = np.sort(a.probabilities, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    assert decided.mean() > 0.99  # the fixture is not a tie everywhere
    np.testing.assert_array_equal(a.labels[decided], b.labels[decided])


def test_parse_scales():
    assert protocol.parse_scales("ms") == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert protocol.parse_scales("1.0") == (1.0,)
    assert protocol.parse_scales("0.5,1.0, 1.5") == (0.5, 1.0, 1.5)
    for bad in ("0", "-1", "a,b", "", "1,nan"):
        with pytest.raises(UserError):
            protocol.parse_scales(bad)


def test_bad_settings_and_images(model):
    image = _image((50, 60, 3), 0)
    with pytest.raises(UserError, match="crop_size"):
        protocol.predict(model, image, crop_size=473)
    with pytest.raises(UserError, match="scale"):
        protocol.predict(model, image, scales=(0.0,))
    with pytest.raises(UserError, match="uint8"):
        protocol.predict(model, image.astype(np.float32))
    with pytest.raises(UserError, match="uint8"):
        protocol.predict(model, np.zeros((5, 5, 2), np.uint8))


def test_bfloat16_precision_rebuilds_the_network(model):
    image = _image((100, 200, 3), seed=11)
    f32 = protocol.predict(model, image)
    bf16 = protocol.predict(model, image, precision="bfloat16")
    assert protocol.model_precision(protocol.with_precision(model, "bfloat16")) == "bfloat16"
    assert bf16.probabilities.dtype == np.float32  # logits and everything after stay float32
    assert np.mean(f32.labels == bf16.labels) > 0.9
    assert 0 < np.abs(f32.probabilities - bf16.probabilities).max() < 0.5  # really ran in bf16
    with pytest.raises(UserError, match="precision"):
        protocol.predict(model, image, precision="int8")
