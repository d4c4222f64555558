"""Full-size parity of converted models with the NumPy Caffe reference, for all three released nets.

Synthetic caffemodels built from the author's prototxts (tests/support/caffe_nets.py) go through
psp-convert --verify; the bar is issue 3's: max|dlogit|/std <= 1e-4 and argmax agreement >= 99.99%.
"""

import dataclasses
import json

import numpy as np
import pytest

from psp_tf.convert import detect, loader, numpy_caffe, reader, synthetic, verify
from psp_tf import build_pspnet
from psp_tf.model_dir import load_model

from support.caffe_nets import run_convert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ade_loaded(ade_file):
    """(the file's layers, pspnet50_ade20k with the file's weights): read, built and loaded once."""
    net = reader.read_caffemodel(ade_file)
    model = build_pspnet("pspnet50_ade20k")
    loader.load_caffe_weights(model, net)
    return net, model


def _check_parity(meta, preset):
    result = meta["verification"]
    assert meta["preset"] == preset
    assert result["passed"] and result["compared_at"] == "conv6_interp"
    assert result["rel_diff"] <= verify.MAX_REL_DIFF
    assert result["agreement"] >= verify.MIN_AGREEMENT
    assert result["first_divergence"] is None


def test_ade20k_parity_savedmodel_and_load_model(tmp_path, capsys, ade_file, ade_loaded):
    out, saved = tmp_path / "ade", tmp_path / "ade_savedmodel"
    code, stdout, err = run_convert(capsys, "--caffemodel", ade_file, "--output", str(out), "--verify",
                                    "--prototxt", f"{synthetic.SPECS_DIR}/pspnet50_ADE20K_473.prototxt",
                                    "--savedmodel", str(saved))
    assert code == 0, err
    assert "parity PASS" in stdout
    meta = json.load(open(out / "config.json"))
    _check_parity(meta, "pspnet50_ade20k")
    assert meta["savedmodel_max_rel_diff"] <= verify.MAX_REL_DIFF
    assert (saved / "saved_model.pb").exists()  # the CLI reloaded it and compared logits (above)
    model = load_model(str(out))  # the written weights, not the in-memory model, are what --verify passed
    assert model.psp_config.name == "pspnet50_ade20k" and model.psp_config.num_classes == 150
    # Bit-identical to the weights the file loads into the network --verify checked, so they pass the
    # same check (rerunning the NumPy reference on them took a minute and proved no more).
    _, verified = ade_loaded
    for written, checked in zip(model.weights, verified.weights):
        assert written.path == checked.path
        np.testing.assert_array_equal(written.numpy(), checked.numpy())


@pytest.mark.parametrize("preset,fixture", [("pspnet101_voc2012", "voc_file"),
                                            ("pspnet101_cityscapes", "cityscapes_file")])
def test_pspnet101_parity(request, preset, fixture):
    # The library path of the CLI (read, detect, build, load, verify), without writing 500 MB of outputs.
    path = request.getfixturevalue(fixture)
    net = reader.read_caffemodel(path)
    assert detect.resolve_preset(detect.describe(net, path), path) == preset
    model = build_pspnet(preset)
    loader.load_caffe_weights(model, net)
    result = verify.verify(model, net.layers)
    _check_parity({"preset": preset, "verification": dataclasses.asdict(result)}, preset)


def test_first_diverging_layer_is_found(ade_loaded):
    net, model = ade_loaded
    bn = model.get_layer("conv3_2_3x3_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, mean, var * 4])  # a conversion bug in one layer
    try:
        # verify() calls this after a failed logit comparison; called directly to skip the full forward.
        image = verify.fixed_test_image(473, 473)
        inputs = {"data": numpy_caffe.caffe_input(image, model.psp_config.mean)}
        assert verify.first_divergence(model, net.layers, inputs, image) == "conv3_2_3x3/bn"
    finally:  # the module's model is shared: the file's weights again
        bn.set_weights([gamma, beta, mean, var])
