"""--init from a keras.applications ResNet50/101 ImageNet weights file, for presets with stem 'resnet'.

keras.applications ResNets (v1) are Kaiming He's Caffe ResNets: BGR input minus the Caffe mean
('caffe' preprocessing), stride on the first 1x1 of each stage, and convs *with* biases followed by BN.
Our convs have no bias, so a conv bias b is folded into the next BN's moving mean (exact:
BN(Wx + b) = gamma (Wx - (mu - b)) / sigma + beta). Our model takes RGB and subtracts the same mean
itself, so conv1's input channels are reversed (BGR -> RGB). Keras' BN epsilon 1.001e-5 vs our 1e-5
changes sigma by a relative 5e-9: below float32 resolution.
"""

import re

import h5py

from psp_tf.errors import UserError
from psp_tf.model_dir import load_weights_file
from psp_tf.presets import RESNET_BLOCKS

DEPTH_OF_CONV4_BLOCKS = {6: 50, 23: 101, 36: 152}
DEPTH_OF_CONV_COUNT = {53: 50, 104: 101, 155: 152}


def inspect(path):
    """Reads the layer names in a Keras weights file: (depth, has_classifier_top).

    Raises:
      UserError: not an HDF5 file, or not a ResNet50/101/152 weights file.
    """
    names = []
    try:
        with h5py.File(path, "r") as f:
            f.visit(names.append)
    except OSError as e:
        raise UserError(f"--init {path}: not a readable HDF5 weights file ({e})") from None
    blocks = [int(m.group(1)) for n in names for m in [re.search(r"conv4_block(\d+)_", n)] if m]
    if blocks:  # legacy .h5 (the files keras.applications downloads): stored by layer name
        depth = DEPTH_OF_CONV4_BLOCKS.get(max(blocks))
        top = any(re.search(r"(^|/)predictions(/|$)", n) for n in names)
    else:  # Keras 3 .weights.h5: stored by object type and creation order (conv2d, conv2d_1, ...)
        convs = {n for n in names if re.fullmatch(r"layers/conv2d(_\d+)?", n)}
        depth = DEPTH_OF_CONV_COUNT.get(len(convs))
        top = any(re.fullmatch(r"layers/dense(_\d+)?", n) for n in names)
    if depth is None:
        raise UserError(f"--init {path}: not a keras.applications ResNet50/101/152 weights file "
                        f"(no matching conv4_blockN layers or conv count)")
    return depth, top


def build_source(path):
    """The keras.applications ResNet that `path` belongs to, with its weights loaded."""
    import keras

    depth, top = inspect(path)
    factory = {50: keras.applications.ResNet50, 101: keras.applications.ResNet101,
               152: keras.applications.ResNet152}[depth]
    source = factory(weights=None, include_top=top)
    try:  # the one loader of the tree: a misshapen layer is one line, not Keras' tensor dump
        load_weights_file(source, path, f"keras.applications ResNet{depth}")
    except UserError as e:
        raise UserError(f"--init {e}") from None
    return source, depth


def load_into(model, path):
    """Copies the ResNet's weights into `model` by name (see the module docstring for the folding).

    Returns:
      (kernels, layers, description): the loaded kernels by layer name (the L2-SP anchors), the
      names of the layers filled, and one line for the log (psp_tf.training.warm_start.InitResult).

    Raises:
      UserError: the preset has the deep stem or another depth/width than the file.
    """
    config = model.psp_config
    if config.stem != "resnet":
        raise UserError(f"--init {path} is an ImageNet ResNet (7x7 stem) but --preset {config.name} has "
                        f"the '{config.stem}' stem; use a preset with stem 'resnet'")
    source, depth = build_source(path)
    if tuple(config.stage_blocks) != RESNET_BLOCKS[depth] or config.width != 64 or config.stem_width != 64:
        raise UserError(f"--init {path} is a ResNet{depth} but --preset {config.name} has blocks "
                        f"{config.stage_blocks}, width {config.width}")
    biases, kernels, loaded = {}, {}, set()
    for layer in source.layers:
        target_name = keras_resnet_name(layer.name)
        if target_name is None or not layer.weights:
            continue
        target = model.get_layer(target_name)
        weights = layer.get_weights()
        if layer.name.endswith("_conv"):
            kernel = weights[0]
            if layer.name == "conv1_conv":
                kernel = kernel[:, :, ::-1, :]  # BGR-trained first conv -> our RGB input
            target.set_weights([kernel])
            kernels[target_name] = kernel
            biases[target_name + "_bn"] = weights[1] if len(weights) > 1 else 0.0
        else:
            gamma, beta, mean, variance = weights
            target.set_weights([gamma, beta, mean - biases.pop(target_name, 0.0), variance])
        loaded.add(target_name)
    return (kernels, frozenset(loaded),
                      f"--init {path}: ImageNet ResNet{depth}, {len(kernels)} conv kernels "
                      f"(biases folded into BN means)")


def keras_resnet_name(name: str):
    """Maps a keras.applications ResNet layer name to our Caffe-derived name (None if unmapped).

    conv1_conv -> conv1_7x7_s2; convS_blockB_{0,1,2,3}_{conv,bn} -> convS_B_{1x1_proj, 1x1_reduce,
    3x3, 1x1_increase}[_bn].
    """
    if name in ("conv1_conv", "conv1_bn"):
        return "conv1_7x7_s2" + ("_bn" if name.endswith("bn") else "")
    match = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", name)
    if not match:
        return None
    stage, block, index, kind = match.groups()
    part = {"0": "1x1_proj", "1": "1x1_reduce", "2": "3x3", "3": "1x1_increase"}[index]
    return f"conv{stage}_{block}_{part}" + ("_bn" if kind == "bn" else "")
