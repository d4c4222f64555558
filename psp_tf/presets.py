"""Named PSPNet configurations: the author's three released networks and a tiny one for demos and tests.

Facts come from the author's deploy prototxts and evaluation code (docs/caffe_reference.md §1, §3.1,
§4). A preset is a frozen dataclass; `get_preset(name, **overrides)` returns a validated copy.
"""

import dataclasses
import math
import numbers
from typing import Optional, Tuple

from psp_tf import classes

# The mean the author subtracts, in RGB order (evaluation/eval_all.m: mean_r, mean_g, mean_b).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

# Bottleneck blocks per stage (conv2..conv5) for each ResNet depth.
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """A published figure: mIoU and pixel accuracy in percent (None where not published)."""

    split: str
    single_scale_miou: Optional[float] = None
    single_scale_pixel_acc: Optional[float] = None
    multi_scale_miou: Optional[float] = None
    multi_scale_pixel_acc: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class PSPNetConfig:
    """Everything that defines one PSPNet: architecture, input protocol and label space.

    Attributes:
      name: preset name.
      dataset: the dataset the weights were trained on (a `psp_tf.data` name).
      num_classes: classifier width K.
      class_names: K names, index = network channel.
      palette: K RGB colours, index = network channel.
      depth: ResNet depth (50, 101, 152); ignored when `blocks` is given.
      blocks: bottleneck blocks per stage conv2..conv5; derived from `depth` when None.
      stem: 'deep' (the author's three 3x3 convs 64/64/128) or 'resnet' (7x7/64, ImageNet ResNets).
      conv3_stride_on: where conv3_1 strides: 'reduce' (conv3_1_1x1_reduce, PSPNet50-ADE20K) or
        '3x3' (conv3_1_3x3, both released PSPNet101 nets).
      width: channels of the stage-2 bottleneck (64 in ResNets); stages double it.
      stem_width: channels of the first stem convs (64); the deep stem's third conv has twice this.
      bins: pyramid pooling bins.
      ppm_channels: channels of each pyramid branch (512).
      head_channels: channels of conv5_4 (512).
      aux_channels: channels of the auxiliary head's 3x3 conv (256).
      dropout: dropout rate before both classifiers (0.1).
      crop_size: network input size (H, W) used for training and sliding-window evaluation.
      base_size: the long side an image is resized to at scale 1 is base_size + 1.
      mean: RGB mean subtracted inside the model.
      source_channel_order: channel order of the original (Caffe) weights' first conv.
      prototxt: the author's deploy prototxt in psp_tf/specs, or None.
      paper: the published results of the released weights, or None.
    """

    name: str
    dataset: str
    num_classes: int
    class_names: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    depth: int = 50
    blocks: Optional[Tuple[int, int, int, int]] = None
    stem: str = "deep"
    conv3_stride_on: str = "reduce"
    width: int = 64
    stem_width: int = 64
    bins: Tuple[int, ...] = (1, 2, 3, 6)
    ppm_channels: int = 512
    head_channels: int = 512
    aux_channels: int = 256
    dropout: float = 0.1
    crop_size: Tuple[int, int] = (473, 473)
    base_size: int = 512
    mean: Tuple[float, float, float] = CAFFE_MEAN_RGB
    source_channel_order: str = "BGR"
    prototxt: Optional[str] = None
    paper: Optional[PaperResult] = None

    @property
    def stage_blocks(self) -> Tuple[int, int, int, int]:
        return tuple(self.blocks) if self.blocks is not None else RESNET_BLOCKS[self.depth]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields) -> "PSPNetConfig":
        """Rebuilds a config from `to_dict()` output read back from JSON (lists -> tuples), validated.

        Raises:
          ValueError: unknown keys or invalid values.
        """
        if not isinstance(fields, dict):
            raise ValueError(f"a config is a JSON object of fields, not {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}")
        values = dict(fields)  # lists become tuples in get_preset
        if values.get("paper") is not None:
            if not isinstance(fields["paper"], dict):
                raise ValueError("paper must be a JSON object (or null)")
            values["paper"] = PaperResult(**fields["paper"])
        return get_preset(cls(**values))


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def size_pair(size) -> Tuple[int, int]:
    """An image size as (height, width): an int is a square."""
    if isinstance(size, numbers.Integral):  # numpy integers too
        return (int(size), int(size))
    return tuple(int(s) for s in size)


def feature_size(input_size: int) -> int:
    """Spatial size at output stride 8 under Caffe's size rules (473 -> 60, 713 -> 90)."""
    size = (input_size - 1) // 2 + 1  # conv1_1_3x3_s2: k3 s2 p1, floor rule
    size = -(-(size - 1) // 2) + 1  # pool1_3x3_s2: k3 s2 p1, ceil rule
    return (size - 1) // 2 + 1  # conv3_1 (either stride placement): floor rule


def pyramid_bins_problem(input_size, bins) -> Optional[str]:
    """Why `input_size` (H, W) does not suit the pyramid `bins`, or None when it does.

    The pyramid pools are fixed (kernel = stride = f / bin, as in the prototxts), so every bin must
    divide the feature map f = feature_size(side) of both sides. The reason starts with the size
    ("97x97 gives ..."): callers prefix what it is ("input size ", "--crop_size=").
    """
    height, width = size_pair(input_size)
    if min(height, width) < 9:
        return f"{height}x{width} is smaller than the network's smallest input, 9x9"
    feature = (feature_size(height), feature_size(width))
    for bin_count in bins:
        if any(f % bin_count for f in feature):
            return (f"{height}x{width} gives a {feature[0]}x{feature[1]} feature map, which does not "
                    f"divide into {bin_count}x{bin_count} pyramid bins (bins={tuple(bins)}); use a size "
                    f"8*k+1 whose feature size k+1 is a multiple of every bin, e.g. 473 or 713")
    return None


def _tiny_names(n):
    return tuple(f"class_{i}" for i in range(n))


PRESETS = {
    # PSPNet50 on ADE20K. evaluate.py --expect paper: 41.68 / 80.04 (ss), 42.78 / 80.76 (ms).
    "pspnet50_ade20k": PSPNetConfig(
        name="pspnet50_ade20k", dataset="ade20k", num_classes=150,
        class_names=classes.ADE20K_CLASSES, palette=classes.ADE20K_PALETTE,
        depth=50, conv3_stride_on="reduce", crop_size=(473, 473), base_size=512,
        prototxt="pspnet50_ADE20K_473.prototxt",
        paper=PaperResult("validation", 41.68, 80.04, 42.78, 80.76)),
    # PSPNet101 on VOC 2012: the only published figure is 85.41 ms mIoU on the test server.
    "pspnet101_voc2012": PSPNetConfig(
        name="pspnet101_voc2012", dataset="voc2012", num_classes=21,
        class_names=classes.VOC2012_CLASSES, palette=classes.VOC2012_PALETTE,
        depth=101, conv3_stride_on="3x3", crop_size=(473, 473), base_size=512,
        prototxt="pspnet101_VOC2012_473.prototxt",
        paper=PaperResult("test", multi_scale_miou=85.41)),
    # PSPNet101 on Cityscapes fine: 79.70 / 96.38 (ss), 80.91 / 96.59 (ms) on val.
    "pspnet101_cityscapes": PSPNetConfig(
        name="pspnet101_cityscapes", dataset="cityscapes", num_classes=19,
        class_names=classes.CITYSCAPES_CLASSES, palette=classes.CITYSCAPES_PALETTE,
        depth=101, conv3_stride_on="3x3", crop_size=(713, 713), base_size=2048,
        prototxt="pspnet101_cityscapes_713.prototxt",
        paper=PaperResult("val", 79.70, 96.38, 80.91, 96.59)),
    # A narrow, shallow PSPNet (one block per stage, 1/8 width) for the synthetic demo and tests:
    # `python train.py` trains it on the built-in synthetic dataset on 2 CPU cores.
    "tiny": PSPNetConfig(
        name="tiny", dataset="synthetic", num_classes=4, class_names=_tiny_names(4),
        palette=((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)),
        blocks=(1, 1, 1, 1), width=8, stem_width=8, ppm_channels=16, head_channels=32,
        aux_channels=16, crop_size=(137, 137), base_size=160, bins=(1, 2, 3, 6),
        conv3_stride_on="reduce", source_channel_order="RGB"),
}

_CHOICES = {
    "stem": ("deep", "resnet"),
    "conv3_stride_on": ("reduce", "3x3"),
    "source_channel_order": ("RGB", "BGR"),
}


def get_preset(name: str, **overrides) -> PSPNetConfig:
    """Returns the preset `name` with `overrides` applied, validated.

    Raises:
      ValueError: unknown preset or override key, or a value outside its allowed set.
    """
    if isinstance(name, PSPNetConfig):  # built in code: lists (as JSON gives them) become tuples
        config = dataclasses.replace(name, **{f.name: _tuples(getattr(name, f.name)) for f in dataclasses.fields(name)
                                              if isinstance(getattr(name, f.name), list)})
    elif name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    else:
        config = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(PSPNetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    overrides = {k: _tuples(v) for k, v in overrides.items()}  # lists (from JSON, flags) as tuples
    if "crop_size" in overrides:
        overrides["crop_size"] = size_pair(overrides["crop_size"])
    if "num_classes" in overrides and overrides["num_classes"] != config.num_classes:
        # A new label space: keep names and palette consistent unless the caller gave them.
        k = overrides["num_classes"]
        overrides.setdefault("class_names", _tiny_names(k))
        overrides.setdefault("palette", tuple(classes.voc_palette_color(i) for i in range(k)))
    config = dataclasses.replace(config, **overrides)
    _validate(config)
    return config


_POSITIVE_INTS = ("num_classes", "depth", "width", "stem_width", "ppm_channels", "head_channels", "aux_channels",
                  "base_size")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _validate_types(config: PSPNetConfig):
    """Each field's kind, so a hand-edited config.json is refused here rather than deep in a build."""
    for key in _POSITIVE_INTS:
        if not _is_int(getattr(config, key)) or getattr(config, key) < 1:
            raise ValueError(f"{key}={getattr(config, key)!r} must be a positive integer")
    for key in ("name", "dataset"):
        if not isinstance(getattr(config, key), str):
            raise ValueError(f"{key}={getattr(config, key)!r} must be a string")
    if not isinstance(config.class_names, tuple) or not all(isinstance(n, str) for n in config.class_names):
        raise ValueError("class_names must be a list of strings")
    if not isinstance(config.palette, tuple) or not all(
            isinstance(c, tuple) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in config.palette):
        raise ValueError("palette must be a list of [R, G, B] colours, each an integer 0-255")
    for key in ("blocks", "bins", "crop_size"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, tuple) or not value
                                  or not all(_is_int(v) and v >= 1 for v in value)):
            raise ValueError(f"{key}={value!r} must be a list of positive integers")
    if config.bins is None:
        raise ValueError("bins must be a list of positive integers")
    if not isinstance(config.mean, tuple) or len(config.mean) != 3 or not all(_is_number(v) for v in config.mean):
        raise ValueError(f"mean={config.mean!r} must be three finite numbers (R, G, B)")
    if not _is_number(config.dropout):
        raise ValueError(f"dropout={config.dropout!r} must be a number")


def _validate(config: PSPNetConfig):
    _validate_types(config)
    for key, allowed in _CHOICES.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{key}={getattr(config, key)!r} is not one of {allowed}")
    if config.blocks is None and config.depth not in RESNET_BLOCKS:
        raise ValueError(f"depth={config.depth} is not one of {sorted(RESNET_BLOCKS)} (or give blocks=)")
    if len(config.stage_blocks) != 4 or min(config.stage_blocks) < 1:
        raise ValueError(f"blocks={config.blocks} must be four positive block counts")
    if config.num_classes < 1:
        raise ValueError(f"num_classes={config.num_classes} must be positive")
    if len(config.class_names) != config.num_classes or len(config.palette) != config.num_classes:
        raise ValueError(f"preset {config.name}: {config.num_classes} classes but "
                         f"{len(config.class_names)} names and {len(config.palette)} colours")
    if len(config.crop_size) != 2 or min(config.crop_size) < 9:
        raise ValueError(f"crop_size={config.crop_size} must be (height, width), each at least 9")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout={config.dropout} must be in [0, 1)")
