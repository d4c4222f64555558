"""PredictConfig and ExportConfig: what psp-predict and psp-export are asked to do (light: no TensorFlow).

The drivers (psp_tf/cli/predict.py, export.py) derive their flags from these fields; the library calls
(`psp_tf.inference.files.predict_files`, `psp_tf.export.export_model`) take the configs.
"""

import dataclasses
from typing import Optional

from psp_tf import checks, settings
from psp_tf.errors import UserError

PRECISIONS = ("float32", "bfloat16")
TFLITE_KINDS = ("float32", "float16", "dynamic_int8")  # psp_tf.export's kinds (that module loads TensorFlow)


def _require(config, *names):
    for name in names:
        if not getattr(config, name):
            raise UserError(f"--{name} is required")


def _tflite_kinds(text):
    kinds = tuple(k for k in text.replace(" ", "").split(",") if k)
    unknown = [k for k in kinds if k not in TFLITE_KINDS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(TFLITE_KINDS)}")
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]!r} is given twice")
    return kinds


# The fields predict and export share (each call is a new dataclass field): the weights and the protocol.
def _weights():
    return settings.setting(None, "psp_tf weights directory (psp-convert / psp-train output; required)", path=True)


def _scales():
    # Text: parsed, and checked against the machine's memory, by protocol.parse_scales.
    return settings.setting("1.0", "1.0 | ms (the author's 0.5,0.75,...,1.75) | comma-separated scales")


def _flip():
    return settings.setting(True, "add the mirrored pass (the author always does); --noflip skips it")


def _batch_size():
    return settings.setting(2, "network inputs per forward pass", rule=checks.POSITIVE_INT)


def _precision():
    return settings.setting("float32", "compute precision of the network", choices=PRECISIONS)


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Segment image files into colour masks, label PNGs and overlays."""

    input: Optional[str] = settings.setting(None, "an image or a directory of images (required)", path=True)
    output: Optional[str] = settings.setting(
        None, "output directory; a rerun skips the images whose outputs are all there (required)", output=True)
    weights: Optional[str] = _weights()
    scales: str = _scales()
    flip: bool = _flip()
    batch_size: int = _batch_size()
    precision: str = _precision()
    overlay: bool = settings.setting(False, "also write overlays with a legend")
    overwrite: bool = settings.setting(False, "redo every image, replacing outputs already in --output")

    def __post_init__(self):
        settings.check_settings(self)
        _require(self, "weights", "input", "output")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Write a servable SavedModel (the protocol inside) and, optionally, TFLite networks."""

    output: Optional[str] = settings.setting(None, "SavedModel directory (written atomically; required)",
                                             output=True)
    weights: Optional[str] = _weights()
    scales: str = _scales()
    flip: bool = _flip()
    batch_size: int = _batch_size()
    precision: str = _precision()
    # `tuple`, not Tuple[str, ...]: one flag of comma-separated text that `parse` splits, not a repeated one.
    tflite: tuple = settings.setting(
        (), f"also write the fixed-size network as OUTPUT/network_KIND.tflite, for each KIND of a "
            f"comma-separated list of {', '.join(TFLITE_KINDS)}", parse=_tflite_kinds)
    overwrite: bool = settings.setting(False, "replace an existing --output")

    def __post_init__(self):
        settings.check_settings(self)
        _require(self, "weights", "output")
        # In code, "float32,float16" is the flag's text: the same kinds as the tuple.
        text = self.tflite if isinstance(self.tflite, str) else ",".join(self.tflite)
        try:
            object.__setattr__(self, "tflite", _tflite_kinds(text))
        except ValueError as e:
            raise UserError(f"--tflite={text!r}: {e}") from None
