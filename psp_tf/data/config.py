"""The data side's configurations: the training augmentation and the two data tools.

`AugmentConfig` is resolved once with the network's mean (`AugmentConfig.for_network(network)`) and
written to train_config.json (`to_dict` / `from_dict`). `CheckConfig` (psp-check-data) and
`WriteTFRecordsConfig` (psp-write-tfrecords) are the tools' flags, declared once (psp_tf.settings);
each parses its --dataset_option texts once, into `reader_options`.

This module is light (no TensorFlow): the drivers read it before TensorFlow starts.
"""

import dataclasses
from typing import Optional, Tuple

from psp_tf import checks, settings
from psp_tf.data import options as options_lib
from psp_tf.data.options import OPTIONS
from psp_tf.errors import UserError

# The reference RandomGaussianBlur is cv2.GaussianBlur(img, (5, 5), 0); for sigma 0 and ksize <= 7
# OpenCV uses its fixed small kernels, for 5 taps the binomial [1, 4, 6, 4, 1] / 16 (not the
# sigma = 1.1 Gaussian its formula would give).
BLUR_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
BLUR_SIZE = len(BLUR_KERNEL)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run (defaults: the paper's), and the colour they pad with.

    Attributes:
      mean: RGB fill colour of padding and rotated-in borders (labels there are 255): the network's
        mean (`for_network`), so that padding reaches the network as 0, as the author's data layer did.
      scale_range: (low, high) uniform random scale of the image; None = no scaling.
      max_rotation: rotation drawn uniformly in [-max_rotation, max_rotation] degrees; 0 = none.
      blur_prob: probability of a 5x5 Gaussian blur (OpenCV's binomial kernel) of the crop; 0 = never.
      mirror: random horizontal flip with probability 0.5.
      random_crop: random crop offset; False = centre crop (padding is always centred).
    """

    mean: Tuple[float, float, float]
    scale_range: Optional[Tuple[float, float]] = (0.5, 2.0)
    max_rotation: float = 10.0
    blur_prob: float = 0.5
    mirror: bool = True
    random_crop: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        if self.scale_range is not None:
            object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        if len(self.mean) != 3 or (self.scale_range is not None and len(self.scale_range) != 2):
            raise UserError(f"augmentation: mean {self.mean} needs 3 values, scale_range {self.scale_range} 2")

    @classmethod
    def for_network(cls, network, **overrides):
        """The paper's augmentation padding with `network`'s mean (a PSPNetConfig or anything with `.mean`)."""
        return cls(mean=tuple(network.mean), **overrides)

    @classmethod
    def none(cls, mean, **overrides):
        """No random augmentation: centre crop (with padding in `mean`) only."""
        base = dict(scale_range=None, max_rotation=0.0, blur_prob=0.0, mirror=False, random_crop=False)
        base.update(overrides)
        return cls(mean=mean, **base)

    def to_dict(self):
        """Plain JSON types (tuples become lists); `from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The config `to_dict` wrote (e.g. train_config.json's `augment`).

        Raises:
          UserError: a key that is not a field, or a field missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown or "mean" not in values:
            raise UserError(f"augmentation config {dict(values)}: unknown keys {unknown} or no mean")
        return cls(**values)


DATASET_NAMES = tuple(sorted(OPTIONS))
DEFAULT_CROP = 473
# The augmentation blurs with a 5x5 kernel on a reflect-padded crop, and TensorFlow's reflect padding
# needs more pixels than it pads.
MIN_CROP = BLUR_SIZE // 2 + 1
CROP = checks.Range(True, MIN_CROP, checks.INT32_MAX, text=f"an integer >= {MIN_CROP} (the augmentation's blur)")


def _dataset(help_text):
    return settings.setting(None, help_text, choices=DATASET_NAMES)


def _dataset_options():
    accepted = "; ".join(f"{name}: {', '.join(options_lib.names(name))}" for name in DATASET_NAMES
                         if options_lib.names(name))
    return settings.setting((), f"A dataset reader option key=value, e.g. num_classes=5 ({accepted}).",
                            flag="dataset_option")


def _require(config, *names):
    for name in names:
        if getattr(config, name) is None:
            raise UserError(f"--{name} is required")


def _resolve_options(config):
    """Parses --dataset_option once, into the reader's typed record (`config.reader_options`)."""
    object.__setattr__(config, "dataset_options", tuple(config.dataset_options))
    object.__setattr__(config, "_reader_options", options_lib.parse(config.dataset, config.dataset_options))


class _DataTool:
    """What both data tools' configs share: the typed options of their dataset."""

    @property
    def reader_options(self):
        """The dataset reader's options record, parsed from `dataset_options` when the config was made."""
        return self._reader_options


@dataclasses.dataclass(frozen=True)
class CheckConfig(_DataTool):
    """psp-check-data: scan a split, report it, optionally write augmented samples."""

    dataset: Optional[str] = _dataset("Dataset name (required).")
    data_dir: Optional[str] = settings.setting(None, "Dataset root directory (not needed for synthetic).",
                                               path=True)
    split: Optional[str] = settings.setting(None, "Split to scan (required).")
    dataset_options: Tuple[str, ...] = _dataset_options()
    limit: Optional[int] = settings.setting(None, "Scan only the first N images.", rule=checks.POSITIVE_INT)
    samples: int = settings.setting(0, "Augmented samples to write.", rule=checks.NON_NEGATIVE_INT)
    samples_dir: Optional[str] = settings.setting(
        None, "Where the sample PNGs go (sample_000.png, ...; existing ones are not replaced).", output=True)
    crop: Optional[int] = settings.setting(None, f"Sample crop size (default {DEFAULT_CROP}).", rule=CROP)
    seed: Optional[int] = settings.setting(None, "Sample seed (default 0).", rule=checks.SEED)

    def __post_init__(self):
        _require(self, "dataset", "split")
        settings.check_settings(self)
        if self.samples and self.samples_dir is None:
            raise UserError("--samples needs --samples_dir")
        for name in ("samples_dir", "crop", "seed"):
            if getattr(self, name) is not None and not self.samples:
                raise UserError(f"--{name} needs --samples N")
        _resolve_options(self)


@dataclasses.dataclass(frozen=True)
class WriteTFRecordsConfig(_DataTool):
    """psp-write-tfrecords: a dataset split as TFRecord shards plus their metadata."""

    dataset: Optional[str] = _dataset("Dataset name (required).")
    data_dir: Optional[str] = settings.setting(None, "Dataset root (local or gs://).", path=True)
    split: Optional[str] = settings.setting(None, "Split to write (required).")
    dataset_options: Tuple[str, ...] = _dataset_options()
    output: Optional[str] = settings.setting(
        None, "Shard prefix (required): writes PREFIX-00000-of-0000N.tfrecord and PREFIX.json.", output=True)
    num_shards: int = settings.setting(1, "Number of shards.", rule=checks.POSITIVE_INT)
    quiet: bool = settings.setting(False, "No progress bar.")

    def __post_init__(self):
        _require(self, "dataset", "split", "output")
        settings.check_settings(self)
        _resolve_options(self)
