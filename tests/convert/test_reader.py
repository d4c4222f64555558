"""Schema, reader and synthetic writer: blob layouts, size limits, bad files, the prototxts' exact counts."""

import collections
import os

import numpy as np
import pytest

from psp_tf.convert import caffe_pb, detect, reader, synthetic
from psp_tf.convert.netspec import blob_to_array
from psp_tf.errors import UserError

from support.caffe_nets import resnet50_like_net, v1_net, write_net

pytestmark = pytest.mark.heavy(20)

# docs/caffe_reference.md §1.1: weight values in the prototxt-defined blobs, all and of BN layers.
PARAMS = {
    "pspnet50_ADE20K_473.prototxt": (46_841_174, 117_248),
    "pspnet101_VOC2012_473.prototxt": (65_819_349, 221_696),
    "pspnet101_cityscapes_713.prototxt": (65_818_323, 221_696),
}
# docs/caffe_reference.md §1.1: Convolution, BN, ReLU, Eltwise, Pooling, Interp, Concat, Dropout.
LAYER_COUNTS = {"pspnet50_ADE20K_473.prototxt": (61, 60, 56, 16, 5, 5, 1, 1),
                "pspnet101_VOC2012_473.prototxt": (112, 111, 107, 33, 5, 5, 1, 1),
                "pspnet101_cityscapes_713.prototxt": (112, 111, 107, 33, 5, 5, 1, 1)}
TYPES = ("Convolution", "BN", "ReLU", "Eltwise", "Pooling", "Interp", "Concat", "Dropout")


@pytest.mark.parametrize("name", sorted(LAYER_COUNTS))
def test_prototxt_layer_list(name):
    net = reader.read_prototxt(f"{synthetic.SPECS_DIR}/{name}")
    counts = collections.Counter(layer.type for layer in net.layers)
    assert tuple(counts[t] for t in TYPES) == LAYER_COUNTS[name]
    assert net.input_name == "data" and net.input_shape[:2] == (1, 3)
    layers = net.by_name()
    assert layers["conv4_1_3x3"].params == {"num_output": 256, "bias_term": False, "kernel": (3, 3), "stride": (1, 1),
                                            "pad": (2, 2), "dilation": (2, 2), "group": 1}
    assert layers["conv6"].params["bias_term"] and layers["conv5_3_pool1"].params["method"] == "AVE"
    stride_at = "conv3_1_1x1_reduce" if "50" in name else "conv3_1_3x3"
    assert layers[stride_at].params["stride"] == (2, 2)


@pytest.mark.slow
def test_synthetic_files_have_exact_parameter_counts(ade_file, voc_file, cityscapes_file):
    files = {"pspnet50_ADE20K_473.prototxt": ade_file, "pspnet101_VOC2012_473.prototxt": voc_file,
             "pspnet101_cityscapes_713.prototxt": cityscapes_file}
    for name, path in files.items():
        net = reader.read_caffemodel(path)
        deploy = {layer.name for layer in reader.read_prototxt(f"{synthetic.SPECS_DIR}/{name}").layers}
        sizes = [(l.type, sum(b.size for b in l.blobs)) for l in net.layers if l.name in deploy]
        assert sum(s for _, s in sizes) == PARAMS[name][0]
        assert sum(s for t, s in sizes if t == "BN") == PARAMS[name][1]
        conv6 = net.by_name()["conv6"]
        assert conv6.blobs[1].size == conv6.params["num_output"]


def test_synthetic_weights_are_realistic_and_seeded(ade_file):
    first = synthetic.build_net("pspnet50_ADE20K_473.prototxt", seed=1, extra_layers=True, legacy_layout=True)
    assert first.SerializeToString() == open(ade_file, "rb").read()  # same seed, same bytes
    layers = reader.read_caffemodel(ade_file).by_name()
    w = layers["conv4_2_3x3"].blobs[0]
    assert w.shape == (256, 256, 3, 3)
    assert abs(w.std() - np.sqrt(2 / (256 * 9))) < 0.001  # He init
    gamma, beta, mean, var = layers["conv4_2_3x3/bn"].blobs
    assert abs(gamma.mean() - 1) < 0.05 and var.min() > 0
    assert layers["conv1_1_3x3_s2/bn"].blobs[3].mean() > 1000  # sized for raw-pixel-scale activations


def test_fast_blob_writer_equals_protobuf_extend():
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    fast, slow = caffe_pb.BlobProto(), caffe_pb.BlobProto()
    caffe_pb.set_blob_values(fast, values)
    slow.data.extend(values.tolist())
    assert fast.SerializeToString() == slow.SerializeToString()
    fast64, slow64 = caffe_pb.BlobProto(), caffe_pb.BlobProto()
    caffe_pb.set_blob_values(fast64, values, double=True)
    slow64.double_data.extend(values.astype(np.float64).tolist())
    assert fast64.SerializeToString() == slow64.SerializeToString()


def test_blob_layouts_and_double_data():
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    modern = caffe_pb.BlobProto()
    modern.shape.dim.extend(values.shape)
    caffe_pb.set_blob_values(modern, values)
    legacy = caffe_pb.BlobProto(num=2, channels=3, height=2, width=2)
    caffe_pb.set_blob_values(legacy, values, double=True)
    for blob in (modern, legacy):
        np.testing.assert_array_equal(blob_to_array(caffe_pb.BlobProto.FromString(blob.SerializeToString())), values)
    legacy_bias = caffe_pb.BlobProto(num=1, channels=1, height=1, width=5)
    caffe_pb.set_blob_values(legacy_bias, np.ones(5))
    assert blob_to_array(legacy_bias).shape == (1, 1, 1, 5)


def test_reads_files_over_64_mib(tmp_path):
    net = caffe_pb.NetParameter(name="big")
    layer = net.layer.add(name="conv6", type="Convolution")
    values = np.arange(18 * 2**20, dtype=np.float32)  # 72 MiB in one blob
    blob = layer.blobs.add()
    blob.shape.dim.extend([values.size])
    caffe_pb.set_blob_values(blob, values)
    path = write_net(tmp_path / "big.caffemodel", net)
    read = reader.read_caffemodel(path)
    assert read.layers[0].blobs[0][-1] == values[-1] and read.layers[0].blobs[0].size == values.size


def _error(path):
    with pytest.raises(UserError) as e:
        reader.read_caffemodel(str(path))
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    assert "is empty" in _error(empty)
    rand = tmp_path / "random.caffemodel"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    assert "not a valid binary caffemodel" in _error(rand) or "no Caffe layers" in _error(rand)
    text = tmp_path / "deploy.caffemodel"
    text.write_bytes(open(f"{synthetic.SPECS_DIR}/pspnet50_ADE20K_473.prototxt", "rb").read())
    assert "text file" in _error(text) and "--prototxt" in _error(text)
    v1 = write_net(tmp_path / "v1.caffemodel", v1_net())
    message = _error(v1)
    assert "V1-format" in message and "pre-2015" in message and "upgrade_net_proto_binary" in message
    assert "does not exist" in _error(tmp_path / "missing.caffemodel")
    fifo = tmp_path / "fifo.caffemodel"  # never opened: a FIFO's read would block for ever
    os.mkfifo(fifo)
    assert "is not a regular file" in _error(fifo)
    with pytest.raises(UserError, match="prototxt /dev/zero is not a regular file"):
        reader.read_prototxt("/dev/zero")  # a device: the read would never end


def test_blob_count_shape_mismatch_is_corrupt(tmp_path):
    net = caffe_pb.NetParameter()
    blob = net.layer.add(name="conv6", type="Convolution").blobs.add()
    blob.shape.dim.extend([2, 3])
    caffe_pb.set_blob_values(blob, np.ones(5))
    message = _error(write_net(tmp_path / "bad.caffemodel", net))
    assert "conv6" in message and "(2, 3)" in message


@pytest.mark.parametrize("dims,legacy,values,expected", [
    ([-1, -1], False, 1, "negative dimension in its shape (-1, -1)"),
    ([-1, 3, 1, 1], True, 3, "negative dimension in its shape (-1, 3, 1, 1)"),
    ([2 ** 32, 2 ** 32], False, 0, f"holds 0 values but its shape (4294967296, 4294967296) needs {2 ** 64}"),
], ids=["negative", "legacy_negative", "product_beyond_int64"])
def test_corrupt_blob_shapes_are_one_line(tmp_path, dims, legacy, values, expected):
    # These reached numpy's reshape (or wrapped around in an int64 product) as tracebacks.
    net = caffe_pb.NetParameter()
    blob = net.layer.add(name="conv6", type="Convolution").blobs.add()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(dims)
    caffe_pb.set_blob_values(blob, np.ones(values))
    message = _error(write_net(tmp_path / "bad.caffemodel", net))
    assert "'conv6' blob 0" in message and expected in message


def test_a_classifier_that_is_not_4d_is_one_line(tmp_path):
    # A PSPNet's layer names with a 0-d conv6 blob (one value, no dims): an IndexError before.
    net = caffe_pb.NetParameter(name="pspnet")
    net.layer.add(name="conv5_3_pool1", type="Pooling")
    caffe_pb.set_blob_values(net.layer.add(name="conv6", type="Convolution").blobs.add(), np.ones(1))
    path = write_net(tmp_path / "odd.caffemodel", net)
    with pytest.raises(UserError, match=r"odd.caffemodel: layer conv6's weights have the shape \(\), not \[classes"):
        detect.describe(reader.read_caffemodel(path), path)


def test_other_network_is_named(tmp_path):
    path = write_net(tmp_path / "ResNet-50-model.caffemodel", resnet50_like_net())
    net = reader.read_caffemodel(path)
    with pytest.raises(UserError, match="model of another network 'ResNet-50'.*not PSPNet"):
        detect.describe(net, path)


def test_prototxt_errors(tmp_path):
    binary = write_net(tmp_path / "x.caffemodel", resnet50_like_net())
    with pytest.raises(UserError, match="not a text prototxt"):
        reader.read_prototxt(binary)
    broken = tmp_path / "broken.prototxt"
    broken.write_text('layer { name: "a" type: ')
    with pytest.raises(UserError, match="not a valid prototxt"):
        reader.read_prototxt(str(broken))
