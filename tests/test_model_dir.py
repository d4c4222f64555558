"""psp_tf.load_model on a converted-model directory, in both precisions, and its errors."""

import json
import os

import numpy as np
import pytest

from psp_tf.convert import loader, run, verify
from psp_tf import build_pspnet
from psp_tf.errors import UserError
from psp_tf.model_dir import load_model, write_model_dir
from psp_tf.presets import PSPNetConfig, get_preset
from support.bounds import tiny_bfloat16_rms


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A converted-model directory written by the CLI's writer, for the small 'tiny' preset."""
    model = build_pspnet("tiny")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0.5 if "gamma" in w.name or "variance" in w.name else 0, 0.1,
                                          w.shape).astype(np.float32) ** (2 if "variance" in w.name else 1)
                               for w in layer.weights])
    report = loader.LoadReport(loaded=[], skipped=[], training_only=[])
    meta = run.output_metadata(model.psp_config, "tiny", {"name": "x", "size": 0, "sha256": ""}, report, None, None)
    directory = str(tmp_path_factory.mktemp("converted") / "tiny")
    os.makedirs(directory)
    write_model_dir(model, directory, meta)
    image = verify.fixed_test_image(137, 137)[None].astype(np.float32)
    # Eager calls here and below: the same kernels as predict, without tracing a tf.function each time.
    return directory, np.asarray(model(image)), image


def test_load_model_float32_and_bfloat16(tiny_dir):
    directory, want, image = tiny_dir
    model = load_model(directory)
    assert model.psp_config == get_preset("tiny")  # what build_pspnet("tiny") resolves, without a build
    np.testing.assert_array_equal(np.asarray(model(image)), want)
    # Its kernels started as zeros before the file overwrote them; its layer configs are a normal
    # build's (he_normal), so keras.models.clone_model of it initialises as build_pspnet does.
    built = build_pspnet("tiny")
    assert [layer.get_config() for layer in model.layers] == [layer.get_config() for layer in built.layers]
    half = load_model(directory, precision="bfloat16")
    got = np.asarray(half(image))
    assert got.dtype == np.float32 and half.get_layer("conv5_4").compute_dtype == "bfloat16"
    # Really bfloat16 (not 0), and within twice the rms that tiny's bfloat16 roundings make.
    assert 0 < np.sqrt(np.mean((got - want) ** 2)) < 2 * tiny_bfloat16_rms() * want.std()
    assert set(os.listdir(directory)) >= {"config.json", "model.weights.h5", "ckpt.index"}


def test_config_round_trip_and_errors(tiny_dir, tmp_path):
    directory, _, _ = tiny_dir
    meta = json.load(open(os.path.join(directory, "config.json")))
    assert PSPNetConfig.from_dict(meta["config"]) == get_preset("tiny")
    with pytest.raises(UserError, match="not a converted model directory"):
        load_model(str(tmp_path))
    with pytest.raises(UserError, match="precision"):
        load_model(directory, precision="int8")
    (tmp_path / "config.json").write_text(json.dumps({"config": {"name": "x", "bogus": 1}}))
    with pytest.raises(UserError, match="no valid PSPNet config: unknown config key"):
        load_model(str(tmp_path))


def _edited(meta, key, value):
    edited = json.loads(json.dumps(meta))
    if key == "palette[0]":
        edited["config"]["palette"][0] = value
    elif key is None:
        edited["config"] = value
    else:
        edited["config"][key] = value
    return edited


# Hand edits of config.json that once reached the network builder or a picture as a traceback.
@pytest.mark.parametrize("key,value,expect", [
    ("crop_size", [512, 512], "input size 512x512 gives a 65x65 feature map"),
    ("crop_size", [137.5, 137.5], "crop_size=(137.5, 137.5) must be a list of positive integers"),
    ("bins", [0], "bins=(0,) must be a list of positive integers"),
    ("base_size", "x", "base_size='x' must be a positive integer"),
    ("num_classes", True, "num_classes=True must be a positive integer"),
    ("width", 0, "width=0 must be a positive integer"),
    ("ppm_channels", -1, "ppm_channels=-1 must be a positive integer"),
    ("mean", [1, 2], "mean=(1, 2) must be three finite numbers"),
    ("mean", ["a", "b", "c"], "must be three finite numbers"),
    ("dropout", "x", "dropout='x' must be a number"),
    ("class_names", [1, 2, 3, 4], "class_names must be a list of strings"),
    ("palette[0]", [300, 0, 0], "palette must be a list of [R, G, B] colours, each an integer 0-255"),
    ("palette[0]", [1, 2], "palette must be a list of [R, G, B] colours"),
    ("paper", [1], "paper must be a JSON object"),
    (None, [], "a config is a JSON object of fields, not list"),
])
def test_a_hand_edited_config_is_one_error_naming_the_file(tiny_dir, tmp_path, key, value, expect):
    directory, _, _ = tiny_dir
    meta = json.load(open(os.path.join(directory, "config.json")))
    (tmp_path / "config.json").write_text(json.dumps(_edited(meta, key, value)))
    os.symlink(os.path.join(directory, "model.weights.h5"), tmp_path / "model.weights.h5")
    with pytest.raises(UserError) as raised:
        load_model(str(tmp_path))
    assert str(raised.value).startswith(f"{tmp_path}/config.json holds no valid PSPNet config: ")
    assert expect in str(raised.value)


def test_a_config_nested_too_deep_is_one_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserError, match=f"cannot read {tmp_path}/config.json: maximum recursion depth"):
        load_model(str(tmp_path))
