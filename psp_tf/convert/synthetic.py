"""Writes synthetic .caffemodel files: the author's real layer list with seeded random weights.

The released caffemodels cannot be downloaded here, so tests and benchmarks convert files made by
this module instead: the layer list, names, types and parameters come from the author's deploy
prototxt (psp_tf/specs), the weights are random with realistic scales, and the file is written
with the same protobuf schema a real file is read with (`convert.caffe_pb`).

Scales: convolutions are He-initialised (std sqrt(2 / fan_in), msra as in the prototxts); BN
layers get gamma near 1, a small beta, and a running mean / variance that match the expected
scale of the activations they normalise (tracked through the graph), so activations stay O(1)
through 100+ layers as in a trained net; the classifier bias is non-zero.
"""

import os

import numpy as np

from psp_tf.convert import caffe_pb
from psp_tf.outputs import atomic_file

SPECS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")

# Scale of the mean-subtracted 0..255 input pixels (std of a natural image channel, roughly).
_INPUT_SCALE = 60.0


def load_prototxt_net(prototxt):
    """The NetParameter of a prototxt given by path or by file name in psp_tf/specs."""
    path = prototxt if os.path.exists(prototxt) else os.path.join(SPECS_DIR, prototxt)
    with open(path) as f:
        return caffe_pb.parse_prototxt(f.read())


def _add_blob(layer, values, legacy=False, double=False):
    """Appends `values` as a blob, in the modern shape.dim layout or the legacy 4-D one."""
    blob = layer.blobs.add()
    if legacy:
        # Old Caffe wrote every blob as num/channels/height/width, left-padding with ones.
        shape = (1,) * (4 - values.ndim) + values.shape
        blob.num, blob.channels, blob.height, blob.width = shape
    else:
        blob.shape.dim.extend(values.shape)
    caffe_pb.set_blob_values(blob, values, double=double)


def _conv_weights(rng, layer, in_channels):
    p = layer.convolution_param
    kh = p.kernel_h if p.HasField("kernel_h") else (p.kernel_size[0] if len(p.kernel_size) else 1)
    kw = p.kernel_w if p.HasField("kernel_w") else (p.kernel_size[-1] if len(p.kernel_size) else 1)
    shape = (p.num_output, in_channels // max(p.group, 1), kh, kw)
    std = np.sqrt(2.0 / (shape[1] * kh * kw))
    blobs = [rng.standard_normal(shape, dtype=np.float32) * np.float32(std)]
    if p.bias_term:
        blobs.append(rng.standard_normal(p.num_output, dtype=np.float32) * np.float32(0.5))
    return blobs


def _bn_blobs(rng, channels, scale):
    shape = (1, channels, 1, 1)
    gamma = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    beta = 0.1 * rng.standard_normal(shape, dtype=np.float32)
    mean = np.float32(0.2 * scale) * rng.standard_normal(shape, dtype=np.float32)
    var = (np.float32(scale) * rng.uniform(0.7, 1.3, shape).astype(np.float32)) ** 2
    return [gamma, beta, mean, var]


def _propagate(layer, channels, scales):
    """Output (channels, scale) of a layer from its inputs': the graph walk that sizes the blobs."""
    ins = [channels[b] for b in layer.bottom]
    in_scales = [scales[b] for b in layer.bottom]
    t = layer.type
    if t == "Convolution":
        return layer.convolution_param.num_output, in_scales[0]  # He init keeps the pre-ReLU scale
    if t == "BN":
        return ins[0], 1.0  # normalised; gamma ~ 1
    if t == "Concat":
        return sum(ins), max(in_scales)
    if t == "Eltwise":
        return ins[0], float(np.sqrt(sum(s * s for s in in_scales)))
    return ins[0], in_scales[0]


def _fill_layer(rng, layer, channels, scales, legacy, double):
    if layer.type == "Convolution":
        blobs = _conv_weights(rng, layer, channels[layer.bottom[0]])
    elif layer.type == "BN":
        blobs = _bn_blobs(rng, channels[layer.bottom[0]], scales[layer.bottom[0]])
    else:
        return
    for values in blobs:
        _add_blob(layer, values, legacy=legacy, double=double)


def _train_only_layers(net, num_classes):
    """The layers a training net adds around the deploy net: data, aux head, label shrink, losses."""
    extra = caffe_pb.parse_prototxt(f"""
      layer {{ name: "data" type: "ImageSegData" top: "data" top: "label" }}
      layer {{ name: "conv4_aux" type: "Convolution" bottom: "conv4_{_last_block(net, 4)}" top: "conv4_aux"
              convolution_param {{ num_output: 256 kernel_size: 3 pad: 1 bias_term: false }} }}
      layer {{ name: "conv4_aux/bn" type: "BN" bottom: "conv4_aux" top: "conv4_aux" }}
      layer {{ name: "conv4_aux/relu" type: "ReLU" bottom: "conv4_aux" top: "conv4_aux" }}
      layer {{ name: "conv4_aux/dropout" type: "Dropout" bottom: "conv4_aux" top: "conv4_aux" }}
      layer {{ name: "conv6_aux" type: "Convolution" bottom: "conv4_aux" top: "conv6_aux"
              convolution_param {{ num_output: {num_classes} kernel_size: 1 }} }}
      layer {{ name: "label_shrink" type: "Interp" bottom: "label" top: "label_shrink"
              interp_param {{ shrink_factor: 8 }} }}
      layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "conv6" bottom: "label_shrink" top: "loss" }}
      layer {{ name: "loss_aux" type: "SoftmaxWithLoss" bottom: "conv6_aux" bottom: "label_shrink"
              top: "loss_aux" loss_weight: 0.4 }}
    """)
    return list(extra.layer)


def _last_block(net, stage):
    return max(int(l.name.split("_")[1]) for l in net.layer
               if l.type == "Eltwise" and l.name.startswith(f"conv{stage}_"))


def build_net(prototxt, seed=0, *, extra_layers=False, legacy_layout=False, double_data=False, name=None):
    """Builds a NetParameter with the prototxt's layer list and seeded random weights.

    Args:
      prototxt: a path, or a file name in psp_tf/specs (e.g. 'pspnet50_ADE20K_473.prototxt').
      seed: the weights' random seed (same seed = byte-identical file).
      extra_layers: add training-only layers (a data layer, the auxiliary head conv4_aux..conv6_aux
        with weights, a label Interp and losses), as a caffemodel saved by a training run has.
      legacy_layout: write blob shapes as num/channels/height/width instead of shape.dim.
      double_data: write values into double_data instead of data.
      name: NetParameter.name (default: the prototxt's file stem).

    Returns:
      caffe_pb.NetParameter; a trained caffemodel declares no input, so none is set.
    """
    source = load_prototxt_net(prototxt)
    rng = np.random.default_rng(seed)
    layers = list(source.layer)
    if extra_layers:
        conv6 = next(l for l in layers if l.name == "conv6")
        extra = _train_only_layers(source, conv6.convolution_param.num_output)
        layers = extra[:1] + layers + extra[1:]
    net = caffe_pb.NetParameter(name=name or os.path.splitext(os.path.basename(prototxt))[0])
    channels, scales = {"data": 3, "label": 1}, {"data": _INPUT_SCALE, "label": 1.0}
    for src in layers:
        layer = net.layer.add()
        layer.CopyFrom(src)
        if any(b not in channels for b in layer.bottom):
            raise ValueError(f"layer {layer.name} reads a blob no earlier layer writes: {list(layer.bottom)}")
        _fill_layer(rng, layer, channels, scales, legacy_layout, double_data)
        if layer.type not in ("ImageSegData", "SoftmaxWithLoss"):
            channels[layer.top[0]], scales[layer.top[0]] = _propagate(layer, channels, scales)
        for top in layer.top:
            channels.setdefault(top, 1)
            scales.setdefault(top, 1.0)
    return net


def write_caffemodel(path, prototxt, seed=0, **kwargs):
    """Writes a synthetic caffemodel (see `build_net` for the arguments); returns the path."""
    net = build_net(prototxt, seed, **kwargs)
    data = net.SerializeToString()
    del net
    with atomic_file(path) as f:
        f.write(data)
    return path


PRESET_PROTOTXTS = {
    "pspnet50_ade20k": "pspnet50_ADE20K_473.prototxt",
    "pspnet101_voc2012": "pspnet101_VOC2012_473.prototxt",
    "pspnet101_cityscapes": "pspnet101_cityscapes_713.prototxt",
}


def write_preset(config, log=print):
    """Writes the synthetic caffemodel a SyntheticCaffemodelConfig describes (psp-synthetic-caffemodel).

    The file has the released net's exact layer list (its deploy prototxt, plus the training-only
    layers when asked), so psp-convert --verify, evaluate and predict run on it end to end; its
    weights are random, so its predictions mean nothing.

    Raises:
      UserError: --output exists without --overwrite, or cannot be written.
    """
    prototxt = PRESET_PROTOTXTS[config.preset]
    net = build_net(prototxt, config.seed, extra_layers=config.training_layers)
    data = net.SerializeToString()
    del net
    with atomic_file(config.output, overwrite=config.overwrite, flag="--output") as f:
        f.write(data)
    log(f"wrote {config.output}: {len(data) / 2**20:.0f} MiB, the layers of {prototxt} with random weights "
        f"(seed {config.seed}); convert it with psp-convert --caffemodel {config.output} --output DIR --verify")
