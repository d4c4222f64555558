"""--init: Keras ImageNet ResNet files (name map, bias folding, BGR) and converted PSPNet directories."""

import json

import h5py
import keras
import numpy as np
import pytest

from psp_tf import build_pspnet
from psp_tf.errors import UserError
from psp_tf.training.keras_resnet import keras_resnet_name
from psp_tf.training.warm_start import initialize
from support.training import write_pspnet_dir

pytestmark = pytest.mark.heavy(45)

MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)


def test_keras_resnet_names():
    assert keras_resnet_name("conv1_conv") == "conv1_7x7_s2"
    assert keras_resnet_name("conv1_bn") == "conv1_7x7_s2_bn"
    assert keras_resnet_name("conv2_block1_0_conv") == "conv2_1_1x1_proj"
    assert keras_resnet_name("conv3_block4_1_bn") == "conv3_4_1x1_reduce_bn"
    assert keras_resnet_name("conv4_block23_2_conv") == "conv4_23_3x3"
    assert keras_resnet_name("conv5_block3_3_conv") == "conv5_3_1x1_increase"
    assert keras_resnet_name("predictions") is None and keras_resnet_name("pool1_pad") is None


def _randomised_resnet50():
    """A keras.applications ResNet50 with non-trivial biases and BN statistics (as ImageNet's are)."""
    keras.utils.set_random_seed(5)
    source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(65, 65, 3))
    rng = np.random.default_rng(5)
    for layer in source.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.5, bias.shape).astype(np.float32)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.3, b.shape),
                               rng.normal(0, 0.5, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return source


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    from keras.src.legacy.saving import legacy_h5_format

    directory = tmp_path_factory.mktemp("resnet")
    source = _randomised_resnet50()
    new_format = str(directory / "resnet50.weights.h5")
    source.save_weights(new_format)
    legacy = str(directory / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with h5py.File(legacy, "w") as f:  # the layout of the files keras.applications downloads
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    return source, {"weights.h5": new_format, "legacy .h5": legacy}


@pytest.fixture(scope="module")
def pspnet50_resnet_stem():
    # bins (1, 3) let a small 65x65 input (9x9 features) keep the test fast; the backbone is full size.
    return build_pspnet("pspnet50_ade20k", aux_head=True, input_size=65, stem="resnet", num_classes=5,
                        bins=(1, 3))


@pytest.mark.slow  # a ResNet50 and a PSPNet50 (module fixtures) and their forward passes
@pytest.mark.parametrize("kind", ["weights.h5", "legacy .h5"])
def test_keras_resnet50_init_reproduces_its_features(resnet_files, pspnet50_resnet_stem, kind):
    source, files = resnet_files
    model = pspnet50_resnet_stem
    result = initialize(model, files[kind])
    assert len(result.kernels) == 53  # conv1 + 16 blocks x 3 + 4 projections
    assert "conv6" not in result.layers and "conv5_3_pool1_conv" not in result.layers
    np.testing.assert_array_equal(result.kernels["conv1_7x7_s2"],
                                  source.get_layer("conv1_conv").kernel.numpy()[:, :, ::-1, :])
    rgb = np.random.default_rng(0).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    bgr_minus_mean = (rgb - MEAN_RGB)[..., ::-1]  # keras.applications 'caffe' preprocessing
    # Stage 3 is undilated in PSPNet, so up to conv3 both networks compute the same function.
    want = keras.Model(source.input, source.get_layer("conv3_block4_out").output)(bgr_minus_mean)
    got = keras.Model(model.input, model.get_layer("conv3_4_relu").output)(rgb)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4,
                               atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.slow  # needs the ResNet50 files (a module fixture, ~4 s)
def test_keras_resnet_init_rejects_wrong_stem_and_non_resnet_files(resnet_files, tmp_path):
    _, files = resnet_files
    tiny = build_pspnet("tiny")
    with pytest.raises(UserError, match="stem 'resnet'"):
        initialize(tiny, files["weights.h5"])
    deep101 = build_pspnet("tiny", stem="resnet")
    with pytest.raises(UserError, match="is a ResNet50 but --preset tiny has blocks"):
        initialize(deep101, files["weights.h5"])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="not a readable HDF5"):
        initialize(deep101, str(junk))
    with pytest.raises(UserError, match="not 'none', a converted PSPNet directory"):
        initialize(tiny, str(tmp_path / "missing.ckpt"))


@pytest.mark.slow  # ten tiny networks built (four of them by initialize's load_model)
def test_pspnet_directory_init_and_classifier_rules(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_pspnet("tiny")
    directory = write_pspnet_dir(tmp_path, source)
    names = source.psp_config.class_names

    keras.utils.set_random_seed(2)
    model = build_pspnet("tiny", aux_head=True)
    result = initialize(model, directory, class_names=names)
    assert "conv6" in result.layers and "conv6_aux" not in result.layers
    for layer in source.layers:
        for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(got, want)

    keras.utils.set_random_seed(2)
    model = build_pspnet("tiny", aux_head=True)
    fresh = initialize(model, directory, class_names=names, fresh_classifier=True)
    assert "conv6" not in fresh.layers and "conv6" not in fresh.kernels and "conv5_4" in fresh.kernels
    assert not np.array_equal(model.get_layer("conv6").get_weights()[0], source.get_layer("conv6").get_weights()[0])

    other = build_pspnet("tiny", aux_head=True, num_classes=3)
    with pytest.raises(UserError, match="pass --fresh_classifier"):
        initialize(other, directory, class_names=("a", "b", "c"))
    assert "conv6" not in initialize(other, directory, class_names=("a", "b", "c"), fresh_classifier=True).layers
    wider = build_pspnet("tiny", width=16)
    with pytest.raises(UserError, match="width 8 differs from --preset tiny's 16"):
        initialize(wider, directory, class_names=names)


@pytest.mark.slow  # one PSPNet50 train step through the driver (tracing its gradient dominates)
def test_train_py_stem_flag_starts_pspnet50_from_an_imagenet_resnet(resnet_files, tmp_path, capsys):
    from psp_tf.cli.train import main

    _, files = resnet_files
    workdir = tmp_path / "run"
    # The claim is the flag's path (driver -> config -> network -> --init -> saved model), not size or
    # scores: crop 41 is the smallest PSPNet50's bins (1, 2, 3, 6) accept (a 6x6 feature map), and no
    # evaluation (train.py's evaluation at the end: tests/cli/test_train.py).
    common = ["--preset", "pspnet50_ade20k", "--dataset", "synthetic", "--eval_split", "none",
              "--dataset_option", "num_images=2",
              "--workdir", str(workdir), "--steps", "1", "--batch_size", "2", "--crop_size", "41",
              "--l2sp_alpha", "1e-4", "--l2sp_beta", "1e-3"]
    # (Without --stem resnet the deep-stem preset refuses the file: test_keras_resnet_init_rejects_...)
    code = main(["train.py", *common, "--stem", "resnet", "--init", files["weights.h5"]])
    assert code == 0, capsys.readouterr().err[-3000:]
    saved = json.load(open(workdir / "train_config.json"))
    assert saved["stem"] == saved["network"]["stem"] == "resnet" and saved["init"] == files["weights.h5"]
    assert json.load(open(workdir / "model" / "config.json"))["config"]["stem"] == "resnet"
