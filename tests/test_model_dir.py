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
