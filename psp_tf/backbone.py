"""Dilated ResNet backbone of PSPNet with output stride 8 (stage 4 dilation 2, stage 5 dilation 4).

Mirrors the author's deploy prototxts layer for layer (docs/caffe_reference.md §1.2, §1.3): the deep
stem (three 3x3 convs 64/64/128, then a 3x3/2 max pool), bottleneck blocks named `convS_B_*`, and the
per-variant place of the conv3_1 stride. A 'resnet' stem (7x7/64) is offered so that ImageNet ResNet
weights (keras.applications) can initialise training.
"""

from keras import layers

from psp_tf.layers import conv_bn, keras_name, max_pool_caffe

# Per stage conv2..conv5: (stride, dilation). conv4 and conv5 trade their stride for dilation.
STAGE_GEOMETRY = ((1, 1), (2, 1), (1, 2), (1, 4))


def stem(x, config, sync_bn=False, dtype=None):
    """The input stem: returns the pool1 output ([B, H/4, W/4, C])."""
    kw = dict(sync_bn=sync_bn, dtype=dtype)
    if config.stem == "deep":
        x = conv_bn(x, config.stem_width, 3, "conv1_1_3x3_s2", stride=2, **kw)
        x = conv_bn(x, config.stem_width, 3, "conv1_2_3x3", **kw)
        x = conv_bn(x, 2 * config.stem_width, 3, "conv1_3_3x3", **kw)
    else:
        x = conv_bn(x, config.stem_width, 7, "conv1_7x7_s2", stride=2, **kw)
    return max_pool_caffe(x, 3, 2, 1, "pool1_3x3_s2", dtype=dtype)


def bottleneck(x, filters, caffe_prefix, *, stride=1, dilation=1, project=False, stride_on="reduce",
               sync_bn=False, dtype=None):
    """One bottleneck block `convS_B`: 1x1 reduce, 3x3, 1x1 increase, + shortcut, ReLU.

    `stride_on` says which conv carries a stride > 1: the 1x1 reduce (PSPNet50-ADE20K, and
    keras.applications ResNets) or the 3x3 (both released PSPNet101 nets).
    """
    kw = dict(sync_bn=sync_bn, dtype=dtype)
    shortcut = x
    if project:
        shortcut = conv_bn(x, 4 * filters, 1, f"{caffe_prefix}_1x1_proj", stride=stride, relu=False, **kw)
    y = conv_bn(x, filters, 1, f"{caffe_prefix}_1x1_reduce",
                stride=stride if stride_on == "reduce" else 1, **kw)
    y = conv_bn(y, filters, 3, f"{caffe_prefix}_3x3", stride=stride if stride_on == "3x3" else 1,
                dilation=dilation, **kw)
    y = conv_bn(y, 4 * filters, 1, f"{caffe_prefix}_1x1_increase", relu=False, **kw)
    # Caffe's Eltwise SUM takes [shortcut, increase]; addition commutes, so the order is cosmetic.
    x = layers.Add(name=keras_name(caffe_prefix), dtype=dtype)([shortcut, y])
    return layers.ReLU(name=keras_name(caffe_prefix + "/relu"), dtype=dtype)(x)


def dilated_resnet(x, config, sync_bn=False, dtype=None):
    """Runs the backbone on `x`.

    Returns:
      (stage4, stage5): the conv4 output [B, f, f, 16w] (input of the auxiliary head) and the conv5
      output [B, f, f, 32w], f = feature size at output stride 8, w = config.width.
    """
    x = stem(x, config, sync_bn, dtype)
    outputs = []
    for stage_index, num_blocks in enumerate(config.stage_blocks):
        stage = stage_index + 2
        stride, dilation = STAGE_GEOMETRY[stage_index]
        filters = config.width * 2 ** stage_index
        for block in range(1, num_blocks + 1):
            first = block == 1
            x = bottleneck(x, filters, f"conv{stage}_{block}", stride=stride if first else 1,
                           dilation=dilation, project=first, stride_on=config.conv3_stride_on,
                           sync_bn=sync_bn, dtype=dtype)
        outputs.append(x)
    return outputs[2], outputs[3]
