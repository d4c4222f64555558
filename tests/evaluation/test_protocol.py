"""psp_tf.evaluation.protocol.predict against the NumPy transcription of the author's MATLAB protocol.

One image per branch of eval_sub.m / scale_process.m: smaller than the crop, tiles in one direction,
both directions, portrait, landscape, grey, multi-scale, no flip. The issue's targets are
max |Δprob| <= 0.02 and argmax agreement >= 99.5%; the two implementations agree far more closely
(float32 rounding only), so the test also pins the bound that float32 allows (see float32_prob_bound).
"""

import numpy as np
import pytest
import tensorflow as tf

from psp_tf.errors import UserError
from psp_tf.evaluation import protocol, resize, sliding_window
from support.bounds import gamma
from support.protocol_cases import float32_prob_bound, matlab_prediction, smooth_image, tiny_model, traced_logits

pytestmark = pytest.mark.heavy(25)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


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


# Over ~2 s on a quiet machine (the three-scale case, and the 2x2 tiles of 161x151).
SLOW_CASES = {"multi_scale", "both_directions_shrink"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_CASES else name
                                  for name in sorted(CASES)])
def test_predict_matches_matlab_reference(model, name):
    shape, scales, flip = CASES[name]
    image = smooth_image(shape, seed=len(name))
    got = protocol.predict(model, image, scales=scales, flip=flip, batch_size=3)
    tiles, logits = [], []
    want_labels, want_probs = matlab_prediction(model, image, scales, flip, tiles, logits)
    assert got.labels.shape == shape[:2] and got.labels.dtype == np.int32
    assert got.probabilities.shape == shape[:2] + (4,) and got.probabilities.dtype == np.float32
    delta = np.abs(got.probabilities - want_probs).max()
    agreement = np.mean(got.labels == want_labels)
    assert delta <= 0.02 and agreement >= 0.995  # the targets
    # predict runs each tile with its mirror image (batch_size 3 -> 1 pair a call); the reference one
    # tile at a time, eagerly: its own logits, recorded as it ran, are the other side.
    noise = np.abs(traced_logits(model, tiles, 2 if flip else 3) - np.stack(logits)).max()
    bound = float32_prob_bound(noise, 4, len(scales))
    assert delta <= bound, (delta, bound)
    # Where the reference's top two classes are further apart than twice the bound, argmax must agree.
    top2 = np.sort(want_probs, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    np.testing.assert_array_equal(got.labels[decided], want_labels[decided])
    assert len(np.unique(want_labels)) > 1  # a fixture that can tell labels apart
    # The renormalised maps sum to 1 up to the K-term sum, divide and scale average.
    np.testing.assert_allclose(got.probabilities.sum(-1), 1.0, rtol=0, atol=gamma(4 + len(scales) + 2))


@pytest.mark.slow
def test_batch_size_does_not_change_results(model):
    image = smooth_image((320, 300, 3), seed=5)
    a = protocol.predict(model, image, batch_size=1)
    b = protocol.predict(model, image, batch_size=8)
    # Only the network's batching differs (pairs vs 4 pairs a call): measured on predict's own tiles.
    settings = protocol.settings_for(model)
    size = resize.scaled_size(tf.constant(image.shape[0]), tf.constant(image.shape[1]), settings.base_size + 1)
    grid, _ = sliding_window.make_tiles(resize.imresize(tf.constant(image), *size), settings.crop_size, settings.mean)
    tiles = [t for tile in grid.numpy() for t in (tile, tile[:, ::-1])]
    noise = np.abs(traced_logits(model, tiles, 8) - traced_logits(model, tiles, 2)).max()
    bound = float32_prob_bound(noise, 4, 1)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=bound)
    top2 = np.sort(a.probabilities, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    assert decided.mean() > 0.99  # the fixture is not a tie everywhere
    np.testing.assert_array_equal(a.labels[decided], b.labels[decided])


@pytest.mark.slow
def test_the_xla_compiled_step_gives_the_uncompiled_results(model):
    # XLA is the default on accelerators (on a CPU the step runs uncompiled): both must give the
    # protocol's results, apart by what XLA's other float32 order does to the network's logits.
    image = smooth_image((120, 160, 3), seed=7)
    scales = (0.5, 1.0)
    compiled = protocol.predict(model, image, scales=scales, batch_size=2, compiled=True)
    plain = protocol.predict(model, image, scales=scales, batch_size=2, compiled=False)
    tiles = []
    matlab_prediction(model, image, scales, True, tiles)
    noise = np.abs(traced_logits(model, tiles, 2, compiled=True) - traced_logits(model, tiles, 2, compiled=False)).max()
    bound = float32_prob_bound(noise, 4, len(scales))
    np.testing.assert_allclose(compiled.probabilities, plain.probabilities, rtol=0, atol=bound)
    top2 = np.sort(plain.probabilities, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(compiled.labels[decided], plain.labels[decided])


def test_parse_scales():
    assert protocol.parse_scales("ms") == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert protocol.parse_scales("1.0") == (1.0,)
    assert protocol.parse_scales("0.5,1.0, 1.5") == (0.5, 1.0, 1.5)
    for bad in ("0", "-1", "a,b", "", "1,nan"):
        with pytest.raises(UserError):
            protocol.parse_scales(bad)


def test_bad_settings_and_images(model):
    image = smooth_image((50, 60, 3), 0)
    with pytest.raises(UserError, match="crop_size"):
        protocol.predict(model, image, crop_size=473)
    with pytest.raises(UserError, match="scale"):
        protocol.predict(model, image, scales=(0.0,))
    with pytest.raises(UserError, match="uint8"):
        protocol.predict(model, image.astype(np.float32))
    with pytest.raises(UserError, match="uint8"):
        protocol.predict(model, np.zeros((5, 5, 2), np.uint8))


@pytest.mark.slow
def test_bfloat16_precision_rebuilds_the_network(model):
    image = smooth_image((100, 200, 3), seed=11)
    f32 = protocol.predict(model, image)
    bf16 = protocol.predict(model, image, precision="bfloat16")
    assert protocol.model_precision(protocol.with_precision(model, "bfloat16")) == "bfloat16"
    assert bf16.probabilities.dtype == np.float32  # logits and everything after stay float32
    assert np.mean(f32.labels == bf16.labels) > 0.9
    assert 0 < np.abs(f32.probabilities - bf16.probabilities).max() < 0.5  # really ran in bf16
    with pytest.raises(UserError, match="precision"):
        protocol.predict(model, image, precision="int8")
