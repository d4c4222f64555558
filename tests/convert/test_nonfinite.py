"""Weights holding NaN or inf are refused wherever they enter: the reader, the library loader, the CLI."""

import numpy as np
import pytest

from psp_tf.convert import caffe_pb, loader, reader
from psp_tf.convert.netspec import CaffeLayer, CaffeNet
from psp_tf import build_pspnet
from psp_tf.errors import UserError

from support.caffe_nets import leftovers, resnet50_like_net, run_convert, write_net


def _poison(blob, value, index=5, double=False):
    values = np.array(blob.double_data if len(blob.double_data) else blob.data, np.float64)
    values[index] = value
    caffe_pb.set_blob_values(blob, values, double=double)


@pytest.mark.parametrize("value,double", [(np.nan, False), (np.inf, False), (-np.inf, False), (np.nan, True),
                                          (1e300, True)])  # a finite double that overflows float32
def test_reader_refuses_a_non_finite_blob_naming_layer_and_blob(tmp_path, value, double):
    net = resnet50_like_net()
    layer = next(l for l in net.layer if l.name == "res2a_branch1")
    _poison(layer.blobs[0], value, double=double)
    path = write_net(tmp_path / "bad.caffemodel", net)
    with pytest.raises(UserError) as e:
        reader.read_caffemodel(path)
    message = str(e.value)
    assert path in message and "layer 'res2a_branch1' blob 0 holds 1 non-finite value" in message, message
    assert "flat index 5" in message


def test_load_caffe_weights_refuses_non_finite_in_memory_layers_and_leaves_the_model():
    model = build_pspnet("tiny")
    before = [np.array(w) for w in model.weights]
    bias = np.zeros(4, np.float32)
    bias[2] = np.nan
    layers = [CaffeLayer("conv6", "Convolution", ["x"], ["conv6"], [np.zeros((4, 8, 1, 1), np.float32), bias])]
    for source in (layers, CaffeNet(name="net", layers=layers)):
        with pytest.raises(UserError, match=r"layer 'conv6' blob 1 holds 1 non-finite value"):
            loader.load_caffe_weights(model, source)
    for got, want in zip(model.weights, before):
        np.testing.assert_array_equal(np.array(got), want)


@pytest.fixture(scope="module")
def nan_ade_file(ade_file, tmp_path_factory):
    """The synthetic PSPNet50-ADE20K file with one NaN deep inside conv4_2_3x3's kernel."""
    net = caffe_pb.NetParameter()
    with open(ade_file, "rb") as f:
        net.ParseFromString(f.read())
    _poison(next(l for l in net.layer if l.name == "conv4_2_3x3").blobs[0], np.nan, index=1000)
    return write_net(tmp_path_factory.mktemp("nan") / "nan.caffemodel", net)


@pytest.mark.parametrize("flags", [[], ["--verify"], ["--preset", "pspnet50_ade20k"]])
def test_convert_refuses_a_nan_weight_whatever_the_flags(nan_ade_file, tmp_path, capsys, flags):
    output = tmp_path / "out"
    code, _, err = run_convert(capsys, "--caffemodel", nan_ade_file, "--output", str(output), *flags)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {nan_ade_file}: layer 'conv4_2_3x3' blob 0 holds 1 non-finite"), lines[0]
    assert leftovers(output) == []
