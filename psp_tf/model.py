"""`build_pspnet`: the PSPNet of Zhao et al. (CVPR 2017) as a Keras 3 functional model (`PSPNet`).

Backbone (psp_tf.backbone) -> pyramid pooling module (the decoder) -> conv5_4 + classifier conv6 (the
head) -> Caffe Interp to the input size; optionally an auxiliary head on stage 4 for training.
Layer names are the author's Caffe names (psp_tf.layers.keras_name), as in the deploy prototxts.
Keras layers and keras.ops only: the network runs under every Keras 3 backend (tests/test_backends.py).
"""

import keras
from keras import layers

from psp_tf import backbone
from psp_tf.errors import UserError
from psp_tf.layers import Interp, MeanSubtraction, conv2d, conv_bn, keras_name
from psp_tf.presets import PSPNetConfig, get_preset, pyramid_bins_problem

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


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
    x = conv2d(x, config.num_classes, 1, use_bias=True, name=conv_name, dtype="float32")
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
      A PSPNet (a functional keras.Model) mapping float32 [B, H, W, 3] RGB 0..255 to logits
      [B, H, W, K] (and aux logits [B, H, W, K] when aux_head). Its `psp_config` is the resolved
      config (crop_size = input size).

    Raises:
      ValueError: an unknown precision, preset or override, or an input size the bins do not divide.
    """
    if input_size is not None:
        overrides["crop_size"] = input_size
    config = get_preset(preset, **overrides)
    inputs, outputs = _network(config, aux_head, sync_bn, precision)
    return PSPNet(inputs, outputs, config, aux_head=aux_head, sync_bn=sync_bn, precision=precision,
                  name=config.name)


def _network(config, aux_head, sync_bn, precision):
    """The layer graph of build_pspnet: (the input, [logits] or [logits, aux_logits])."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = keras.DTypePolicy(PRECISIONS[precision])
    size = tuple(config.crop_size)
    problem = pyramid_bins_problem(size, config.bins)
    if problem:
        raise ValueError(f"input size {problem}")

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
    return inputs, outputs


@keras.saving.register_keras_serializable(package="psp_tf")
class PSPNet(keras.Model):
    """A PSPNet: the functional graph of `build_pspnet` and the config it was built from.

    Serialised by what built it (`get_config`: the PSPNetConfig and the build options), so a `.keras`
    file rebuilds the same graph with `from_config` and weights load by layer name as before.
    The graph is built for one input size (the pyramid pools are tied to it): calling it on another
    size is an error that says what to do instead.
    """

    def __init__(self, inputs, outputs, psp_config, *, aux_head=False, sync_bn=False,
                 precision="float32", **kwargs):
        super().__init__(inputs, outputs if aux_head else outputs[0], **kwargs)
        self._psp_config = psp_config
        self._build_options = (("aux_head", bool(aux_head)), ("sync_bn", bool(sync_bn)),
                               ("precision", str(precision)))

    @property
    def psp_config(self) -> PSPNetConfig:
        """The resolved config of the network (its crop_size is the input size)."""
        return self._psp_config

    @property
    def build_options(self) -> dict:
        """The `build_pspnet` arguments besides the config: aux_head, sync_bn, precision."""
        return dict(self._build_options)

    def without_aux_head(self):
        """The inference network: these very layers (weights shared), main logits only."""
        if not self.build_options["aux_head"]:
            return self
        return PSPNet(self.input, [self.outputs[0]], self.psp_config,
                      **{**self.build_options, "aux_head": False}, name=f"{self.name}_inference")

    def __call__(self, inputs, *args, **kwargs):
        _check_input_size(inputs, self.psp_config)
        return super().__call__(inputs, *args, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "psp_config": self.psp_config.to_dict(),
                **self.build_options}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        options = dict(config)
        psp_config = PSPNetConfig.from_dict(options.pop("psp_config"))
        name, trainable = options.pop("name"), options.pop("trainable", True)
        aux_head, sync_bn, precision = options.pop("aux_head"), options.pop("sync_bn"), options.pop("precision")
        inputs, outputs = _network(psp_config, aux_head, sync_bn, precision)
        model = cls(inputs, outputs, psp_config, aux_head=aux_head, sync_bn=sync_bn, precision=precision,
                    name=name, **options)
        model.trainable = trainable
        return model


def _check_input_size(inputs, config):
    """Refuses an input whose height/width is not the size the network was built for.

    Keras' own check names shapes but not the way out, and a tensor of unknown size (a tf.function
    or dataset without static shapes) would reach Caffe's Interp as None.
    """
    shape = getattr(inputs, "shape", None)
    if shape is None or len(shape) != 4:
        return  # Keras' input check answers other mistakes (a list, a wrong rank)
    height, width = shape[1], shape[2]
    if (height, width) != tuple(config.crop_size):
        got = "x".join("?" if s is None else str(int(s)) for s in (height, width))
        raise UserError(
            f"the {config.name} network was built for {config.crop_size[0]}x{config.crop_size[1]} inputs "
            f"but got {got}: its pyramid pools are fixed to that size; build it with "
            f"build_pspnet(..., input_size=(H, W)) for another fixed size, or use psp_tf.predict, "
            f"which runs any image size by the author's sliding window")


def conv_macs(model) -> int:
    """Multiply-accumulates of all convolutions of `model` for one image (the network's cost)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += height * width * kh * kw * cin * cout
    return int(total)
