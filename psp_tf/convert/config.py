"""ConvertConfig and SyntheticCaffemodelConfig: what psp-convert and psp-synthetic-caffemodel do (light).

The drivers (psp_tf/cli/convert.py, synthetic_caffemodel.py) derive their flags from these fields;
`psp_tf.convert.run.convert_file` and `psp_tf.convert.synthetic.write_preset` take the configs, so
tests and notebooks need no command line. No TensorFlow import here: --help answers at once.
"""

import dataclasses
from typing import Optional

from psp_tf import checks, settings
from psp_tf.errors import UserError
from psp_tf.presets import PRESETS


def _require(config, *names):
    for name in names:
        if not getattr(config, name):
            raise UserError(f"--{name} is required")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One conversion: the source file(s), the output directory and the checks to run."""

    caffemodel: Optional[str] = settings.setting(None, "the .caffemodel to convert (required)", path=True)
    output: Optional[str] = settings.setting(
        None, "output directory (written atomically; required)", output=True)
    prototxt: Optional[str] = settings.setting(
        None, "deploy prototxt: checked against the file; --verify runs its layer list", path=True)
    # Not `choices`: the check below names the valid presets in the same words detect.resolve_preset uses.
    preset: Optional[str] = settings.setting(
        None, f"psp_tf preset ({', '.join(PRESETS)}); detected from the file when omitted")
    verify: bool = settings.setting(False, "check parity with the NumPy Caffe reference")
    savedmodel: Optional[str] = settings.setting(
        None, "also export the bare network (float32 crop in, logits out) as a SavedModel here", output=True)
    overwrite: bool = settings.setting(False, "replace an existing --output/--savedmodel")

    def __post_init__(self):
        settings.check_settings(self)
        _require(self, "caffemodel", "output")
        if self.preset is not None and self.preset not in PRESETS:  # before a 263 MB file is read
            raise UserError(f"--preset {self.preset} is unknown; valid presets: {', '.join(sorted(PRESETS))}")


# The released nets (psp_tf.convert.synthetic.PRESET_PROTOTXTS holds their prototxts).
RELEASED_PRESETS = ("pspnet50_ade20k", "pspnet101_voc2012", "pspnet101_cityscapes")


@dataclasses.dataclass(frozen=True)
class SyntheticCaffemodelConfig:
    """A synthetic caffemodel: the author's exact layer list with seeded random weights (a dry run)."""

    preset: Optional[str] = settings.setting(None, "which released net's layer list (required)",
                                             choices=RELEASED_PRESETS)
    output: Optional[str] = settings.setting(None, "the .caffemodel to write (required)", output=True)
    seed: int = settings.setting(0, "random seed of the weights (same seed = same file)", rule=checks.SEED)
    training_layers: bool = settings.setting(
        False, "also write the training-only layers (data layer, aux head, losses) a training run saves")
    overwrite: bool = settings.setting(False, "replace an existing --output")

    def __post_init__(self):
        settings.check_settings(self)
        _require(self, "preset", "output")
