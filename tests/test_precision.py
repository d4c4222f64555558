"""The bfloat16 policy (psp_tf.precision): which layers compute in float32, and what bfloat16 changes."""

import os

import numpy as np
import pytest

from psp_tf import build_pspnet, precision
from psp_tf.convert import synthetic
from psp_tf.layers import keras_name
from support.bounds import tiny_bfloat16_rms

# The layers the tiny bfloat16 net computes in float32 (the input, the pyramid's average pools, the
# classifier and its Interp for float32 logits); everything else is bfloat16.
TINY_FLOAT32 = {"data", "data_mean", "conv5_3_pool1", "conv5_3_pool2", "conv5_3_pool3", "conv5_3_pool6",
                "conv6", "conv6_interp", "conv6_aux", "conv6_aux_interp"}


@pytest.fixture(scope="module")
def tiny_pair():
    model32 = build_pspnet("tiny", aux_head=True)
    rng = np.random.default_rng(3)
    # Random BN statistics, so that BN is not the identity and the net's activations vary in scale.
    weights = [w if w.ndim > 1 else rng.uniform(0.7, 1.3, w.shape).astype(np.float32)
               for w in model32.get_weights()]
    model32.set_weights(weights)
    model16 = build_pspnet("tiny", aux_head=True, precision="bfloat16")
    model16.set_weights(weights)
    images = rng.uniform(0, 255, (2, 137, 137, 3)).astype(np.float32)
    return model32, model16, images


def test_policy_pins_the_float32_layers(tiny_pair):
    _, model16, _ = tiny_pair
    float32 = {layer.name for layer in model16.layers if layer.compute_dtype == "float32"}
    assert float32 == TINY_FLOAT32
    assert float32 == {layer.name for layer in model16.layers if precision.keeps_float32(layer.name)}


def test_every_layer_has_a_group(tiny_pair):
    _, model16, _ = tiny_pair
    assert {precision.layer_group(layer.name) for layer in model16.layers} == set(precision.GROUP_NAMES)


@pytest.mark.parametrize("prototxt", sorted(f for f in os.listdir(synthetic.SPECS_DIR) if f.endswith(".prototxt")))
def test_every_layer_of_the_released_nets_has_a_group(prototxt):
    # The author's layer lists name every layer the full-size nets have (tests/test_model.py checks
    # the model against them); reading them is much cheaper than building three 100+-layer models.
    for layer in synthetic.load_prototxt_net(prototxt).layer:
        precision.layer_group(keras_name(layer.name))


def test_a_name_of_no_group_is_an_error():
    with pytest.raises(ValueError, match="conv7_1"):
        precision.layer_group("conv7_1")
    with pytest.raises(ValueError, match="stems"):
        precision.with_float32(build_pspnet("tiny", precision="bfloat16"), ["stems"])


def test_with_float32_moves_exactly_the_named_groups(tiny_pair):
    _, model16, _ = tiny_pair
    mixed = precision.with_float32(model16, ["stem", "head"])
    for layer in mixed.layers:
        in_float32 = precision.layer_group(layer.name) in ("stem", "head") or precision.keeps_float32(layer.name)
        assert layer.compute_dtype == ("float32" if in_float32 else "bfloat16"), layer.name
    assert mixed.psp_config == model16.psp_config


def test_every_group_in_float32_is_the_float32_net(tiny_pair):
    model32, model16, images = tiny_pair
    everything = precision.with_float32(model16, precision.GROUP_NAMES)
    # The same layers, weights and dtypes run the same kernels: equal bit for bit.
    for got, want in zip(everything(images), model32(images)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_bfloat16_disagrees_only_where_float32_is_nearly_tied(tiny_pair):
    model32, model16, images = tiny_pair
    want = model32(images)[0].numpy()
    got = model16(images)[0].numpy()
    assert got.dtype == np.float32
    error = got - want
    rms = np.sqrt(np.mean(error ** 2))
    # Each logit's bfloat16 error is a sum of many independent roundings (at most 2^-8 relative, at every
    # layer's inputs, weights and outputs), so it is close to normal with the rms as its std; the gap
    # between the top two logits moves by the difference of two such errors (std ≈ sqrt(2)·rms). A
    # pixel whose float32 gap exceeds 6·sqrt(2)·rms flips with probability ~1e-9: all must agree. A
    # systematic error (one layer run wrong, a border of the Interp) would break this.
    top2 = np.sort(want, -1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 6 * np.sqrt(2) * rms
    assert clear.mean() > 0.5  # the check covers most pixels
    np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear])
    # The size of that error (support.bounds.tiny_bfloat16_rms, ≈ 0.021 of the logits' scale). Twice
    # that bounds it; a layer computed wrong (a classifier bias shifted by 20% of the logits' std in one
    # of the 4 classes gives 0.1) or left in float32 by mistake (0) falls outside.
    assert 0 < rms < 2 * tiny_bfloat16_rms() * want.std()
