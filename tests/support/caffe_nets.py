"""Caffemodel test material, made once per test session: synthetic PSPNet files and broken ones.

Import the fixtures into a test module with `from support.caffe_nets import *`.
"""

import fcntl
import os

import numpy as np
import pytest

from psp_tf.convert import caffe_pb, synthetic
from psp_tf.cli.convert import main as convert_main

__all__ = ["caffe_dir", "ade_file", "voc_file", "cityscapes_file", "run_convert", "write_net",
           "resnet50_like_net", "v1_net", "leftovers"]


@pytest.fixture(scope="session")
def caffe_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("caffe")


def _shared_caffemodel(tmp_path_factory, name, prototxt, **options):
    """A synthetic caffemodel written once per test run, shared by the pytest-xdist workers.

    Session fixtures are per worker process, and the three files take ~10 s and ~1 GB to write: the
    first worker to ask writes the file under a lock in the run's common temporary root; the others
    wait for the lock and find it there. Tests only read it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's root, above every worker's own directory
    directory = root / "shared_caffemodels"
    directory.mkdir(exist_ok=True)
    path = directory / name
    with open(directory / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():  # write_caffemodel writes atomically: the file is whole or absent
            synthetic.write_caffemodel(str(path), prototxt, **options)
    return str(path)


@pytest.fixture(scope="session")
def ade_file(tmp_path_factory):
    """PSPNet50-ADE20K, as a training run saves it: extra training-only layers, legacy blob layout."""
    return _shared_caffemodel(tmp_path_factory, "pspnet50_ADE20K.caffemodel",
                              "pspnet50_ADE20K_473.prototxt", seed=1, extra_layers=True, legacy_layout=True)


@pytest.fixture(scope="session")
def voc_file(tmp_path_factory):
    """PSPNet101-VOC2012 with every value in double_data."""
    return _shared_caffemodel(tmp_path_factory, "pspnet101_VOC2012.caffemodel",
                              "pspnet101_VOC2012_473.prototxt", seed=2, double_data=True)


@pytest.fixture(scope="session")
def cityscapes_file(tmp_path_factory):
    """PSPNet101-cityscapes in the layout the author's fork writes (shape.dim, float data)."""
    return _shared_caffemodel(tmp_path_factory, "pspnet101_cityscapes.caffemodel",
                              "pspnet101_cityscapes_713.prototxt", seed=3)


def write_net(path, net):
    """Serialises a NetParameter to `path`; returns the path as str."""
    with open(path, "wb") as f:
        f.write(net.SerializeToString())
    return str(path)


def _add_blob(layer, shape, rng):
    blob = layer.blobs.add()
    blob.shape.dim.extend(shape)
    caffe_pb.set_blob_values(blob, rng.standard_normal(shape).astype(np.float32))


def resnet50_like_net():
    """A small stand-in for a ResNet-50 ImageNet classifier caffemodel (KaimingHe's layer names)."""
    rng = np.random.default_rng(0)
    net = caffe_pb.NetParameter(name="ResNet-50")
    spec = [("conv1", "Convolution", [(8, 3, 7, 7), (8,)]), ("bn_conv1", "BatchNorm", [(8,), (8,), (1,)]),
            ("scale_conv1", "Scale", [(8,), (8,)]), ("conv1_relu", "ReLU", []),
            ("res2a_branch1", "Convolution", [(16, 8, 1, 1)]), ("fc1000", "InnerProduct", [(10, 16), (10,)])]
    bottom = "data"
    for name, kind, shapes in spec:
        layer = net.layer.add(name=name, type=kind, bottom=[bottom], top=[name])
        bottom = name
        for shape in shapes:
            _add_blob(layer, shape, rng)
    return net


def v1_net():
    """A V1-format (pre-2015, `layers` field) caffemodel: LeNet-like, with blobs."""
    rng = np.random.default_rng(0)
    net = caffe_pb.NetParameter(name="LeNet")
    for name, kind, shape in [("conv1", 4, (20, 1, 5, 5)), ("pool1", 17, None), ("ip1", 14, (10, 20))]:
        layer = net.layers.add(name=name, type=kind)
        if shape:
            _add_blob(layer, shape, rng)
    return net


def run_convert(capsys, *argv):
    """Runs psp-convert in-process (its `main`, flags as on a command line); returns (exit code, stdout, stderr)."""
    code = convert_main(["psp-convert", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def leftovers(output):
    """Anything a failed run left at or beside `output` (the output itself or a temporary directory)."""
    parent, base = os.path.split(os.path.abspath(output))
    if not os.path.isdir(parent):
        return []
    return [n for n in os.listdir(parent) if n == base or n.startswith(f".{base}.tmp-")]
