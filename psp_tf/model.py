"""`build_pspnet`: the PSPNet of Zhao et al. (CVPR 2017) as a Keras 3 functional model.

Backbone (psp_tf.backbone) -> pyramid pooling module (the decoder) -> conv5_4 + classifier conv6 (the
head) -> Caffe Interp to the input size; optionally an auxiliary head on stage 4 for training.
Layer names are the author's Caffe names (psp_tf.layers.keras_name), as in the deploy prototxts.
"""

import keras
from keras import layers

from psp_tf import backbone
from psp_tf.layers import Interp, MeanSubtraction, conv_bn, keras_name
from psp_tf.presets import get_preset

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def feature_size(input_size: int) -> int:
    """Spatial size at output stride 8 under Caffe's size rules (473 -> 60, 713 -> 90)."""
    size = (input_size - 1) // 2 + 1  # conv1_1_3x3_s2: k3 s2 p1, floor rule
    size = -(-(size - 1) // 2) + 1  # pool1_3x3_s2: k3 s2 p1, ceil rule
    return (size - 1) // 2 + 1  # conv3_1 (either stride placement): floor rule


def _check_bins(input_size, bins):
    feature = tuple(feature_size(s) for s in input_size)
    for bin_count in bins:
        if any(f % bin_count for f in feature):
            raise ValueError(
                f"input size {input_size[0]}x{input_size[1]} gives a {feature[0]}x{feature[1]} feature "
                f"map, which does not divide into {bin_count}x{bin_count} pyramid bins (bins={bins}); "
                f"use a size 8*k+1 whose feature size k+1 is a multiple of every bin, e.g. 473 or 713")
    return feature


def pyramid_pooling(x, config, sync_bn=False, dtype=None):
    """The pyramid pooling module: fixed AVE pools (kernel = stride = f / bin), as in the prototxts.

    Adaptive pooling would give other bins at other sizes; the author's pools are tied to the crop.
    The concat order [conv5_3, pool6, pool3, pool2, pool1] (largest bin first) is what conv5_4's
    weights expect.
    """
    height, width = int(x.shape[1]), int(x.shape[2])
    branches = [x]
    for bin_count in sorted(config.bins, reverse=True):
        prefix = f"conv5_3_pool{bin_count}"
        kernel = (height // bin_count, width // bin_count)
        # Pooled in float32: a float16 sum over up to 90x90 activations overflows (and bfloat16's
        # 8-bit mantissa loses the mean); the next conv casts back to the compute dtype.
        y = layers.AveragePooling2D(kernel, kernel, padding="valid", name=prefix, dtype="float32")(x)
        y = conv_bn(y, config.ppm_channels, 1, f"{prefix}_conv", sync_bn=sync_bn, dtype=dtype)
        branches.append(Interp((height, width), name=f"{prefix}_interp", dtype=dtype)(y))
    return layers.Concatenate(name="conv5_3_concat", dtype=dtype)(branches)


def _classifier(x, config, conv_name, input_size):
    """The 1x1 classifier (the only conv with a bias) + Interp to the input size.

    Kept in float32 under mixed precision so that the logits are float32. For sizes 8k+1 (473, 713)
    the Interp to the input size is Caffe's `zoom_factor: 8` exactly: (in - 1) * 8 + 1.
    """
    x = layers.Conv2D(config.num_classes, 1, use_bias=True, kernel_initializer="he_normal",
                      name=conv_name, dtype="float32")(x)
    return Interp(input_size, name=f"{conv_name}_interp", dtype="float32")(x)


def build_pspnet(preset="pspnet50_ade20k", *, aux_head=False, input_size=None, sync_bn=False,
                 precision="float32", **overrides):
    """Builds PSPNet as a Keras functional model.

    Args:
      preset: a preset name (psp_tf.presets.PRESETS) or a PSPNetConfig.
      aux_head: add the auxiliary head on stage 4 (training) and return its logits as a second output.
      input_size: (H, W) or int; defaults to the preset's crop. Each side must give a feature map
        (f = (side - 1) // 8 + 1) that every pyramid bin divides.
      sync_bn: synchronise BN batch statistics across replicas (tf.distribute).
      precision: 'float32', 'bfloat16' or 'float16': the compute dtype; logits stay float32.
      **overrides: PSPNetConfig fields to change (e.g. num_classes=19).

    Returns:
      A keras.Model mapping float32 [B, H, W, 3] RGB 0..255 to logits [B, H, W, K] (and aux logits
      [B, H, W, K] when aux_head). `model.psp_config` is the resolved config (crop_size = input size).
    """
    if input_size is not None:
        overrides["crop_size"] = input_size
    config = get_preset(preset, **overrides)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = keras.DTypePolicy(PRECISIONS[precision])
    size = tuple(config.crop_size)
    _check_bins(size, config.bins)

    inputs = keras.Input((size[0], size[1], 3), name="data")
    # float32 mean subtraction: in bfloat16, 123.68 itself is not representable.
    x = MeanSubtraction(config.mean, name="data_mean", dtype="float32")(inputs)
    stage4, stage5 = backbone.dilated_resnet(x, config, sync_bn, dtype)

    x = pyramid_pooling(stage5, config, sync_bn, dtype)
    x = conv_bn(x, config.head_channels, 3, "conv5_4", sync_bn=sync_bn, dtype=dtype)
    x = layers.Dropout(config.dropout, name=keras_name("conv5_4/dropout"), dtype=dtype)(x)
    outputs = [_classifier(x, config, "conv6", size)]

    if aux_head:
        # Not in the deploy prototxts (the author released no training prototxt); named in the same
        # scheme. As in the author's PyTorch successor (semseg): 3x3 conv 256 + BN + ReLU + dropout.
        y = conv_bn(stage4, config.aux_channels, 3, "conv4_aux", sync_bn=sync_bn, dtype=dtype)
        y = layers.Dropout(config.dropout, name=keras_name("conv4_aux/dropout"), dtype=dtype)(y)
        outputs.append(_classifier(y, config, "conv6_aux", size))

    model = keras.Model(inputs, outputs if aux_head else outputs[0], name=config.name)
    model.psp_config = config
    return model


def conv_macs(model) -> int:
    """Multiply-accumulates of all convolutions of `model` for one image (the network's cost)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += height * width * kh * kw * cin * cout
    return int(total)
