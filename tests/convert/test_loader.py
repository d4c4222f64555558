"""Strict by-name loading, the Caffe -> Keras adapters, preset detection from the file."""

import numpy as np
import pytest

from psp_tf.convert import detect, loader, reader
from psp_tf import build_pspnet
from psp_tf.errors import UserError

pytestmark = pytest.mark.heavy(20)


@pytest.fixture(scope="module")
def ade_net(ade_file):
    return reader.read_caffemodel(ade_file)


@pytest.mark.slow
def test_adapters_hwio_bn_and_bgr_fold(ade_net):
    model = build_pspnet("pspnet50_ade20k")
    report = loader.load_caffe_weights(model, ade_net)
    blobs = ade_net.by_name()
    assert report.bgr_folded_into == "conv1_1_3x3_s2" and len(report.loaded) == 121
    assert report.training_only == ["conv4_aux", "conv4_aux/bn", "conv6_aux"]
    w = blobs["conv1_1_3x3_s2"].blobs[0]  # [64, 3, 3, 3], BGR input channels
    np.testing.assert_array_equal(model.get_layer("conv1_1_3x3_s2").kernel.numpy(), w.transpose(2, 3, 1, 0)[:, :, ::-1])
    w2 = blobs["conv5_4"].blobs[0]
    np.testing.assert_array_equal(model.get_layer("conv5_4").kernel.numpy(), w2.transpose(2, 3, 1, 0))
    bn = [b.reshape(-1) for b in blobs["conv2_1_1x1_proj/bn"].blobs]
    got = model.get_layer("conv2_1_1x1_proj_bn").get_weights()  # gamma, beta, moving mean, moving variance
    for a, b in zip(got, bn):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.get_layer("conv6").bias.numpy(), blobs["conv6"].blobs[1].reshape(-1))


@pytest.mark.slow
def test_aux_head_loads_training_layers_and_finetune_skip(ade_net):
    aux = build_pspnet("pspnet50_ade20k", aux_head=True)
    report = loader.load_caffe_weights(aux, ade_net)
    assert report.training_only == [] and "conv6_aux" in report.loaded
    np.testing.assert_array_equal(aux.get_layer("conv6_aux").bias.numpy(),
                                  ade_net.by_name()["conv6_aux"].blobs[1].reshape(-1))
    five = build_pspnet("pspnet50_ade20k", num_classes=5)
    before = five.get_layer("conv6").kernel.numpy().copy()
    stem_before = five.get_layer("conv1_2_3x3").kernel.numpy().copy()
    with pytest.raises(UserError, match=r"conv6 blob 0 file \[150, 512, 1, 1\] vs model \[5, 512, 1, 1\]"):
        loader.load_caffe_weights(five, ade_net)
    np.testing.assert_array_equal(five.get_layer("conv1_2_3x3").kernel.numpy(), stem_before)  # untouched on error
    with pytest.raises(UserError, match="skip names no weight layer.*conv66"):
        loader.load_caffe_weights(five, ade_net, skip=("conv66",))
    report = loader.load_caffe_weights(five, ade_net, skip=("conv6",))
    assert report.skipped == ["conv6"]
    np.testing.assert_array_equal(five.get_layer("conv6").kernel.numpy(), before)
    assert not np.array_equal(five.get_layer("conv1_2_3x3").kernel.numpy(), stem_before)


@pytest.mark.slow
def test_detects_presets(ade_net, voc_file, cityscapes_file):
    facts = detect.describe(ade_net, "ade")
    assert facts == detect.FileFacts(blocks=(3, 4, 6, 3), depth=50, num_classes=150, crop=(473, 473),
                                     bins=(1, 2, 3, 6), conv3_stride_on="reduce", stem="deep")
    assert detect.resolve_preset(facts, "ade") == "pspnet50_ade20k"
    for path, preset, classes, crop in [(voc_file, "pspnet101_voc2012", 21, (473, 473)),
                                        (cityscapes_file, "pspnet101_cityscapes", 19, (713, 713))]:
        facts = detect.describe(reader.read_caffemodel(path), path)
        assert (facts.depth, facts.num_classes, facts.crop, facts.conv3_stride_on) == (101, classes, crop, "3x3")
        assert detect.resolve_preset(facts, path) == preset
    with pytest.raises(UserError, match="classes 19 in the file vs 21 in the preset"):
        detect.resolve_preset(facts, cityscapes_file, "pspnet101_voc2012")
