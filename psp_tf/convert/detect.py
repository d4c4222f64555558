"""Reads the architecture facts of a PSPNet caffemodel and matches them to a psp_tf preset.

Depth comes from the number of conv4 blocks (6 -> ResNet-50, 23 -> ResNet-101), the classes from
conv6's weights, the crop from the bin-1 pyramid pool's kernel (the conv5 feature size f; crop =
8 (f - 1) + 1, 60 -> 473, 90 -> 713), the conv3_1 stride placement and the stem from the layers.
"""

import dataclasses
import re
from typing import Optional, Tuple

from psp_tf.convert.netspec import CaffeNet
from psp_tf.errors import UserError
from psp_tf.presets import PRESETS, RESNET_BLOCKS

_BLOCK = re.compile(r"^conv([2-5])_(\d+)_1x1_reduce$")
_POOL = re.compile(r"^conv5_3_pool(\d+)$")
_SIGNATURE = ("conv5_3_pool", "conv6", "conv1_1_3x3_s2", "conv1_7x7_s2")


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """What a caffemodel says about its network.

    Attributes:
      blocks: bottleneck blocks per stage conv2..conv5.
      depth: the ResNet depth those blocks make (None when they match no standard depth).
      num_classes: rows of conv6's weights.
      crop: the network input size the pyramid pools are built for, (H, W).
      bins: the pyramid bins, e.g. (1, 2, 3, 6).
      conv3_stride_on: 'reduce' or '3x3'.
      stem: 'deep' or 'resnet'.
    """

    blocks: Tuple[int, int, int, int]
    depth: Optional[int]
    num_classes: int
    crop: Tuple[int, int]
    bins: Tuple[int, ...]
    conv3_stride_on: str
    stem: str

    def summary(self):
        depth = f"ResNet-{self.depth}" if self.depth else f"blocks {self.blocks}"
        return (f"{depth}, {self.num_classes} classes, crop {self.crop[0]}x{self.crop[1]}, "
                f"conv3 stride on {self.conv3_stride_on}")


def _other_network_error(net, path):
    names = [layer.name for layer in net.layers if layer.blobs][:4]
    title = f" '{net.name}'" if net.name else ""
    return UserError(
        f"{path} is a model of another network{title} ({len(net.layers)} layers, e.g. {', '.join(names)}), "
        "not PSPNet: expected layers conv1_1_3x3_s2, conv5_3_pool1..6 and conv6")


def describe(net: CaffeNet, path: str) -> FileFacts:
    """Reads the FileFacts of `net` (a caffemodel's layer list).

    Raises:
      UserError: the file is not a PSPNet (another network, or layers missing to tell).
    """
    layers = net.by_name()
    names = list(layers)
    if not any(n.startswith(_SIGNATURE[0]) for n in names) or "conv6" not in layers:
        raise _other_network_error(net, path)
    blocks = [0, 0, 0, 0]
    for name in names:
        match = _BLOCK.match(name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage - 2] = max(blocks[stage - 2], block)
    conv6 = layers["conv6"]
    if not conv6.blobs:
        raise UserError(f"{path}: layer conv6 has no weights (a prototxt-only network?)")
    if conv6.blobs[0].ndim != 4:
        raise UserError(f"{path}: layer conv6's weights have the shape {conv6.blobs[0].shape}, not "
                        f"[classes, channels, 1, 1]")
    bins = tuple(sorted(int(_POOL.match(n).group(1)) for n in names if _POOL.match(n)))
    pool1 = layers.get(f"conv5_3_pool{bins[0]}") if bins else None
    if pool1 is None or pool1.type != "Pooling" or bins[0] != 1:
        raise UserError(f"{path}: no bin-1 pyramid pool layer conv5_3_pool1, so the crop size is unknown")
    kernel = pool1.params["kernel"] if not pool1.params["global_pooling"] else None
    if kernel is None:
        raise UserError(f"{path}: conv5_3_pool1 uses global pooling, so the crop size is unknown; pass --preset")
    reduce3 = layers.get("conv3_1_1x1_reduce")
    stride_on = "reduce" if reduce3 is not None and reduce3.params.get("stride", (1, 1))[0] > 1 else "3x3"
    depth = next((d for d, b in RESNET_BLOCKS.items() if tuple(blocks) == b), None)
    return FileFacts(blocks=tuple(blocks), depth=depth, num_classes=int(conv6.blobs[0].shape[0]),
                     crop=tuple(8 * (k - 1) + 1 for k in kernel), bins=bins, conv3_stride_on=stride_on,
                     stem="resnet" if "conv1_7x7_s2" in layers else "deep")


def contradictions(config, facts: FileFacts):
    """Human-readable differences between a preset and the file (empty when they agree)."""
    checks = [
        ("blocks per stage", tuple(config.stage_blocks), facts.blocks),
        ("classes", config.num_classes, facts.num_classes),
        ("crop", tuple(config.crop_size), facts.crop),
        ("pyramid bins", tuple(sorted(config.bins)), facts.bins),
        ("conv3 stride on", config.conv3_stride_on, facts.conv3_stride_on),
        ("stem", config.stem, facts.stem),
    ]
    return [f"{what} {file_value} in the file vs {preset_value} in the preset"
            for what, preset_value, file_value in checks if preset_value != file_value]


def resolve_preset(facts: FileFacts, path: str, preset: Optional[str] = None) -> str:
    """The preset for a file: `preset` checked against the file, or the one preset that matches it.

    Raises:
      UserError: `preset` is unknown or contradicts the file, or no preset matches the file.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"--preset {preset} is unknown; valid presets: {', '.join(sorted(PRESETS))}")
        problems = contradictions(PRESETS[preset], facts)
        if problems:
            raise UserError(f"--preset {preset} contradicts {path}: {'; '.join(problems)}")
        return preset
    matches = [name for name, config in PRESETS.items() if not contradictions(config, facts)]
    if not matches:
        raise UserError(f"{path} ({facts.summary()}) matches no preset ({', '.join(sorted(PRESETS))}); "
                        "convert it with the library (build_pspnet(preset, num_classes=...) + "
                        "load_caffe_weights)")
    return matches[0]
