"""build_pspnet against the author's prototxts, and numerically against NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from support.bounds import dot_error_bound
from support.networks import randomize_bn
from support.prototxt import PRESET_PROTOTXTS, np_bn, np_conv2d, prototxt_layers
from psp_tf import build_pspnet, conv_macs
from psp_tf.errors import UserError
from psp_tf.model import PSPNet
from psp_tf.layers import interp_matrix, keras_name, kernels_loaded_next
from psp_tf.presets import feature_size

pytestmark = pytest.mark.heavy(20)

# Counted from the prototxts' blobs (docs/caffe_reference.md §1.1): four BN blobs per BN layer.
EXPECTED_PARAMS = {"pspnet50_ade20k": 46_841_174, "pspnet101_voc2012": 65_819_349,
                   "pspnet101_cityscapes": 65_818_323}
# GMACs at the crop, counted from the prototxts (docs/performance.md).
EXPECTED_GMACS = {"pspnet50_ade20k": 161.5, "pspnet101_voc2012": 229.8, "pspnet101_cityscapes": 517.2}


@pytest.fixture(scope="module")
def tiny():
    """One tiny float32 net for the tests that read it; those that compare numbers first give it BN
    statistics of their own with randomize_bn (which sets every BN weight: no test sees another's)."""
    return build_pspnet("tiny")


@pytest.fixture(scope="module")
def tiny_aux():
    """One tiny net with the aux head, as `tiny` (the gradient test's training-mode BN update is
    overwritten by randomize_bn in the round trip)."""
    return build_pspnet("tiny", aux_head=True)


@pytest.fixture(scope="module")
def full_models():
    # Their tests read structure, not values: zero kernels skip the he_normal draws (~5 s of CPU).
    with kernels_loaded_next():
        return {preset: build_pspnet(preset) for preset in PRESET_PROTOTXTS}


@pytest.mark.slow  # builds the three full-size networks (once, module fixture)
@pytest.mark.parametrize("preset", sorted(EXPECTED_PARAMS))
def test_exact_parameter_counts_and_cost(full_models, preset):
    model = full_models[preset]
    assert model.count_params() == EXPECTED_PARAMS[preset]
    assert round(conv_macs(model) / 1e9, 1) == EXPECTED_GMACS[preset]


@pytest.mark.slow  # builds the three full-size networks (once, module fixture)
@pytest.mark.parametrize("preset", sorted(PRESET_PROTOTXTS))
def test_weight_layers_are_exactly_the_prototxt_layers(full_models, preset):
    model = full_models[preset]
    spec = {keras_name(name): (kind, body) for name, kind, body in prototxt_layers(PRESET_PROTOTXTS[preset])}
    spec_weights = {n for n, (kind, _) in spec.items() if kind in ("Convolution", "BN")}
    model_weights = {layer.name for layer in model.layers if layer.weights}
    assert model_weights == spec_weights
    for name in spec_weights:
        layer = model.get_layer(name)
        kind, body = spec[name]
        if kind == "BN":
            assert isinstance(layer, keras.layers.BatchNormalization) and layer.epsilon == 1e-5
            continue
        num_output = int(body.split("num_output:")[1].split()[0])
        kernel = int(body.split("kernel_size:")[1].split()[0])
        stride = int(body.split("stride:")[1].split()[0]) if "stride:" in body else 1
        dilation = int(body.split("dilation:")[1].split()[0]) if "dilation:" in body else 1
        assert layer.filters == num_output and layer.kernel_size == (kernel, kernel), name
        assert layer.strides == (stride, stride) and layer.dilation_rate == (dilation, dilation), name
        assert layer.use_bias == ("bias_term: false" not in body), name


@pytest.mark.slow  # builds the three full-size networks (once, module fixture)
def test_conv3_stride_placement_per_variant(full_models):
    ade, voc = full_models["pspnet50_ade20k"], full_models["pspnet101_voc2012"]
    assert ade.get_layer("conv3_1_1x1_reduce").strides == (2, 2)
    assert ade.get_layer("conv3_1_3x3").strides == (1, 1)
    assert voc.get_layer("conv3_1_1x1_reduce").strides == (1, 1)
    assert voc.get_layer("conv3_1_3x3").strides == (2, 2)


@pytest.mark.slow  # builds the three full-size networks (once, module fixture)
def test_pyramid_concat_order_and_pool_sizes(full_models):
    model = full_models["pspnet101_cityscapes"]
    concat = model.get_layer("conv5_3_concat")
    sources = [node.operation.name for node in
               [t._keras_history.operation._inbound_nodes[0] for t in concat.input]]
    assert sources == ["conv5_3_relu", "conv5_3_pool6_interp", "conv5_3_pool3_interp",
                       "conv5_3_pool2_interp", "conv5_3_pool1_interp"]
    for bins, kernel in ((1, 90), (2, 45), (3, 30), (6, 15)):
        assert model.get_layer(f"conv5_3_pool{bins}").pool_size == (kernel, kernel)


def test_feature_sizes():
    assert feature_size(473) == 60 and feature_size(713) == 90 and feature_size(137) == 18


def test_output_shapes_main_aux_and_other_sizes(tiny):
    model = build_pspnet("tiny", aux_head=True, input_size=(89, 185))
    main, aux = model(np.zeros((3, 89, 185, 3), np.float32))
    assert main.shape == (3, 89, 185, 4) and aux.shape == (3, 89, 185, 4)
    assert main.dtype == "float32"
    assert tiny.output.shape == (None, 137, 137, 4)
    assert build_pspnet("tiny", num_classes=7).output.shape == (None, 137, 137, 7)


def test_input_size_that_does_not_divide_into_bins_names_it():
    # 97 -> a 13x13 feature map: 13 is not a multiple of 2, 3 or 6.
    with pytest.raises(ValueError, match=r"input size 97x97 gives a 13x13 feature map, which does not "
                                         r"divide into 2x2 pyramid bins"):
        build_pspnet("tiny", input_size=97)
    # Bins that do divide make any such size legal: 97 with bins (1,) only.
    assert build_pspnet("tiny", input_size=97, bins=(1,)).output.shape == (None, 97, 97, 4)


def _np_conv_bn(model, x, err, name, stride=1, pad=0, dilation=1, relu=True):
    """conv + BN (+ ReLU) in float64, and a first-order bound on float32's error in it (elementwise).

    `err` bounds the error already in `x`. The conv carries it through |W| and adds its own rounding,
    gamma_{n+1} |W| * |x| for n = kh*kw*cin products in any order (+1: oneDNN may fold the BN scale
    into the weights); inference BN (x * s + (beta - mean * s), s = gamma / sqrt(var + eps)) scales
    the error by |s| and adds ~5 roundings of its terms; ReLU is 1-Lipschitz.
    """
    kernel = model.get_layer(name).kernel.numpy()
    n = int(np.prod(kernel.shape[:3]))
    y = np_conv2d(x, kernel, stride, pad, dilation)
    e = (np_conv2d(err, np.abs(kernel), stride, pad, dilation)
         + dot_error_bound(n + 1, np_conv2d(np.abs(x), np.abs(kernel), stride, pad, dilation)))
    gamma_, beta, mean, var = [w.numpy().astype(np.float64) for w in model.get_layer(name + "_bn").weights]
    scale = np.abs(gamma_ / np.sqrt(var + 1e-5))
    e = scale * e + dot_error_bound(5, scale * np.abs(y) + np.abs(beta) + scale * np.abs(mean))
    y = np_bn(y, gamma_, beta, mean, var)
    return (np.maximum(y, 0) if relu else y), e


def _np_interp(x, err, size):
    """Align-corners interp as the two matrix products of psp_tf.layers (the same float32 weights,
    >= 0, at most 2 nonzero taps per pass: gamma_4 in all) in float64, with the error bound."""
    rows, cols = interp_matrix(x.shape[0], size[0]), interp_matrix(x.shape[1], size[1])
    apply = lambda a: np.einsum("oh,pw,hwc->opc", rows.astype(np.float64), cols.astype(np.float64), a)
    return apply(x), apply(err) + dot_error_bound(4, apply(np.abs(x)))


def test_stem_and_first_block_match_numpy(tiny):
    model = randomize_bn(tiny, 0)
    image = np.random.default_rng(1).uniform(0, 255, size=(137, 137, 3)).astype(np.float32)
    x = image - np.array(model.psp_config.mean)
    err = dot_error_bound(1, np.abs(image) + np.abs(np.array(model.psp_config.mean)))  # float32 subtraction
    x, err = _np_conv_bn(model, x, err, "conv1_1_3x3_s2", stride=2, pad=1)
    x, err = _np_conv_bn(model, x, err, "conv1_2_3x3", pad=1)
    x, err = _np_conv_bn(model, x, err, "conv1_3_3x3", pad=1)
    pool = lambda a: np.stack([[np.pad(a, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
                                [2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1)) for j in range(35)]
                               for i in range(35)])
    x, err = pool(x), pool(err)  # max-pool is 1-Lipschitz: the error is at most the window's largest
    shortcut, e_short = _np_conv_bn(model, x, err, "conv2_1_1x1_proj", relu=False)
    y, e_y = _np_conv_bn(model, x, err, "conv2_1_1x1_reduce")
    y, e_y = _np_conv_bn(model, y, e_y, "conv2_1_3x3", pad=1)
    y, e_y = _np_conv_bn(model, y, e_y, "conv2_1_1x1_increase", relu=False)
    expected = np.maximum(shortcut + y, 0)
    bound = e_short + e_y + dot_error_bound(1, np.abs(shortcut + y))
    probe = keras.Model(model.input, model.get_layer("conv2_1_relu").output)
    got = probe(image[None]).numpy()[0]
    assert (np.abs(got - expected) <= bound).all(), np.max(np.abs(got - expected) / bound)


def test_pyramid_pooling_and_head_match_numpy(tiny):
    model = randomize_bn(tiny, 4)
    image = np.random.default_rng(5).uniform(0, 255, size=(1, 137, 137, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer("conv5_1_relu").output, model.output])  # tiny: 1 block a stage
    feature, logits = [t.numpy()[0] for t in probe(image)]
    f = feature.shape[0]
    branches, errors = [feature], [np.zeros_like(feature)]  # TF's own float32 feature: exact input here
    for bins in (6, 3, 2, 1):  # the author's concat order: largest bin first
        k = f // bins
        pooled = feature.reshape(bins, k, bins, k, -1).mean(axis=(1, 3))
        y, e = _np_conv_bn(model, pooled, dot_error_bound(k * k + 1, pooled), f"conv5_3_pool{bins}_conv")
        y, e = _np_interp(y, e, (f, f))
        branches.append(y)
        errors.append(e)
    x, err = _np_conv_bn(model, np.concatenate(branches, axis=-1), np.concatenate(errors, axis=-1), "conv5_4", pad=1)
    conv6 = model.get_layer("conv6")
    w, b = conv6.kernel.numpy()[0, 0].astype(np.float64), conv6.bias.numpy()
    z = x @ w + b
    e = err @ np.abs(w) + dot_error_bound(w.shape[0] + 1, np.abs(x) @ np.abs(w) + np.abs(b))
    expected, bound = _np_interp(z, e, (137, 137))
    assert (np.abs(logits - expected) <= bound).all(), np.max(np.abs(logits - expected) / bound)


def test_gradient_reaches_every_trainable_weight(tiny_aux):
    model = tiny_aux
    x = np.random.default_rng(6).uniform(0, 255, size=(2, 137, 137, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        main, aux = model(x, training=True)
        loss = tf.reduce_mean(main ** 2) + tf.reduce_mean(aux ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 0
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


@pytest.mark.slow  # a .keras file written and rebuilt, and a weights file
def test_save_load_round_trips(tiny_aux, tmp_path):
    model = randomize_bn(tiny_aux, 7)
    x = np.random.default_rng(8).uniform(0, 255, size=(1, 137, 137, 3)).astype(np.float32)
    expected = [t.numpy() for t in model(x)]
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    # The config travels in the file: the model comes back as a PSPNet with the same config and options.
    assert isinstance(restored, PSPNet) and restored.psp_config == model.psp_config
    assert restored.build_options == {"aux_head": True, "sync_bn": False, "precision": "float32"}
    for got, want in zip(restored(x), expected):
        np.testing.assert_array_equal(got.numpy(), want)
    model.save_weights(tmp_path / "m.weights.h5")
    fresh = build_pspnet("tiny", aux_head=True)
    fresh.load_weights(tmp_path / "m.weights.h5")
    for got, want in zip(fresh(x), expected):
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.slow  # an XLA compile of the bfloat16 net
def test_bfloat16_model_keeps_float32_logits_and_runs_under_xla(tiny):
    model32 = randomize_bn(tiny, 9)
    model16 = build_pspnet("tiny", precision="bfloat16")
    model16.set_weights(model32.get_weights())
    assert model16.get_layer("conv2_1_3x3").compute_dtype == "bfloat16"
    x = np.random.default_rng(10).uniform(0, 255, size=(2, 137, 137, 3)).astype(np.float32)
    low = tf.function(lambda t: model16(t), jit_compile=True)(x)
    assert low.dtype == tf.float32
    high = model32(x).numpy()
    # Not a rounding bound: bfloat16 (u = 2^-8) rounds every layer's inputs and weights along a ~18-layer
    # path, a worst case of ~18 * 2^-7 of the activations' scale, more than half of it with BN's
    # cancellations; these only ask that it is still the same function and not garbage.
    assert np.abs(low.numpy() - high).max() < 0.5 * high.std()
    assert (low.numpy().argmax(-1) == high.argmax(-1)).mean() > 0.9


def test_resnet_stem_variant():
    model = build_pspnet("tiny", stem="resnet")
    assert model.get_layer("conv1_7x7_s2").kernel_size == (7, 7)
    assert model.output.shape == (None, 137, 137, 4)


@pytest.mark.slow  # a Keras SavedModel export, loaded back
def test_whole_model_in_a_savedmodel_and_float16(tiny, tmp_path):
    model = randomize_bn(tiny, 11)
    x = np.random.default_rng(12).uniform(0, 255, size=(2, 137, 137, 3)).astype(np.float32)
    expected = model(x).numpy()
    model.export(str(tmp_path / "saved"), verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    # The same float32 net, traced: only oneDNN's fusions and kernel choice differ. Deliberately tighter
    # than the worst-case first-order bound (up to 3% of the max, test_stem_and_first_block_match_numpy),
    # which would miss a wrong export; rounding differences of that kind stay near 1e-6 of the max.
    np.testing.assert_allclose(restored.serve(x).numpy(), expected, atol=1e-4 * np.abs(expected).max())
    half = build_pspnet("tiny", precision="float16")
    half.set_weights(model.get_weights())
    logits = half(x)
    assert logits.dtype == tf.float32
    assert (logits.numpy().argmax(-1) == expected.argmax(-1)).mean() > 0.95


def test_config_is_part_of_the_model():
    model = build_pspnet("tiny", aux_head=True, num_classes=5)
    assert model.psp_config.num_classes == 5 and model.psp_config.crop_size == (137, 137)
    with pytest.raises(AttributeError):
        model.psp_config = None  # a property of the model, not an attribute anyone may replace
    config = model.get_config()
    assert config["psp_config"]["num_classes"] == 5 and config["aux_head"] is True
    rebuilt = PSPNet.from_config(config)
    assert rebuilt.psp_config == model.psp_config and rebuilt.name == model.name
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    inference = model.without_aux_head()
    assert isinstance(inference, PSPNet) and inference.psp_config == model.psp_config
    assert inference.build_options["aux_head"] is False and len(inference.outputs) == 1
    # The very same layers: what training changes, the inference network sees.
    assert inference.get_layer("conv6") is model.get_layer("conv6")
    assert PSPNet.from_config(inference.get_config()).output.shape == (None, 137, 137, 5)
    assert inference.without_aux_head() is inference


def test_call_at_another_size_says_what_to_do(tiny):
    model = tiny
    for size in ((145, 145), (137, 89)):
        x = np.zeros((1, *size, 3), np.float32)
        expected = (rf"the tiny network was built for 137x137 inputs but got {size[0]}x{size[1]}: .*"
                    r"input_size=\(H, W\).*psp_tf.predict")
        with pytest.raises(UserError, match=expected):
            model(x)
        with pytest.raises(UserError, match=expected):
            model.predict(x, verbose=0)
    # A tensor of unknown size (a dataset or tf.function without static shapes) is named as such,
    # instead of reaching Caffe's Interp as None.
    unknown = tf.function(lambda t: model(t), input_signature=[tf.TensorSpec([None, None, None, 3])],
                          autograph=False)
    with pytest.raises(UserError, match="but got \\?x\\?: .*input_size="):
        unknown.get_concrete_function()
