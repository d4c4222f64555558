"""EvalConfig: every setting of one evaluation run (the flags of evaluate.py), typed and checked.

Light (no TensorFlow): the driver derives its flags from these declarations and checks them before
TensorFlow starts (psp_tf.settings, psp_tf.cli.driver). `psp_tf.evaluation.run.evaluate(config)` is
the run itself.
"""

import dataclasses
import math
from typing import Optional, Tuple

from psp_tf import checks, settings
from psp_tf.distribute import STRATEGIES
from psp_tf.errors import UserError

# eval_all.m: "set to [0.5 0.75 1 1.25 1.5 1.75] for multi-scale testing".
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
PRECISIONS = ("float32", "bfloat16")
DEFAULT_TOLERANCE = 0.3


def scales_from_text(text):
    """'1.0' | 'ms' | '0.5,1.0,1.5' (or a sequence of numbers) -> tuple of positive floats.

    Raises:
      ValueError: not numbers, or a scale that is not a finite number > 0 (the message says which).
    """
    if isinstance(text, (tuple, list)):
        values = [float(v) for v in text]
    elif str(text).strip().lower() == "ms":
        values = list(MULTI_SCALES)
    else:
        try:
            values = [float(v) for v in str(text).replace(" ", "").split(",") if v]
        except ValueError:
            raise ValueError("expected 'ms' or comma-separated numbers") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError("every scale must be a number > 0")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation: weights, data, the author's test-time protocol, outputs and where it runs.

    None means "decided from the weights' preset" (dataset, split) or "not asked for".
    """

    weights: Optional[str] = settings.setting(
        None, "psp_tf weights directory (psp-convert output, or psp-train's <workdir>/model); required.",
        path=True)
    dataset: Optional[str] = settings.setting(None, "dataset name (default: the preset's dataset).")
    data_dir: Optional[str] = settings.setting(None, "dataset root directory.", path=True)
    dataset_options: Tuple[str, ...] = settings.setting(
        (), "a dataset reader option key=value, e.g. num_classes=5 for --dataset folder, "
        "coarse=true for cityscapes.", flag="dataset_option")
    split: Optional[str] = settings.setting(
        None, "split (default: the split the paper reports: validation / val).")
    scales: Tuple[float, ...] = settings.setting(
        (1.0,), "1.0 | ms (0.5..1.75) | comma-separated scales.", parse=scales_from_text)
    flip: bool = settings.setting(True, "add the mirrored pass (the author always does); --noflip skips it.")
    batch_size: int = settings.setting(
        2, "network inputs per forward pass and replica (a tile and its mirror image are two); the "
        "tiles of consecutive images and scales fill the batches.", rule=checks.POSITIVE_INT)
    jit_compile: Optional[bool] = settings.setting(
        None, "compile the network step with XLA (one fixed-shape function of a tile batch); default: "
        "on where a GPU or TPU is visible, off on a CPU (where it measured no faster).")
    max_images: Optional[int] = settings.setting(None, "evaluate only the first N images.",
                                                 rule=checks.POSITIVE_INT)
    output_dir: Optional[str] = settings.setting(
        None, "write results.json and prediction PNGs here (atomically).", output=True)
    overwrite: bool = settings.setting(False, "replace an existing --output_dir.")
    cityscapes_submission: bool = settings.setting(
        False, "also write Cityscapes labelId PNGs (test server).")
    show_dir: Optional[str] = settings.setting(
        None, "write one PNG per image here: the image, ground truth and prediction side by side, "
        "an overlay and a legend of the classes present (atomically).", output=True)
    show_max: Optional[int] = settings.setting(
        None, "with --show_dir: draw only the first N images.", rule=checks.POSITIVE_INT)
    expect: Optional[str] = settings.setting(
        None, "compare with the published figures; exit 1 when mIoU is more than --tolerance points "
        "below.", choices=("paper",))
    tolerance: float = settings.setting(
        DEFAULT_TOLERANCE, "allowed mIoU shortfall for --expect paper, in points.", rule=checks.NON_NEGATIVE)
    strategy: str = settings.setting(
        "default", "tf.distribute strategy: tiles are batched over its replicas, images over its workers.",
        choices=STRATEGIES)
    tpu: Optional[str] = settings.setting(
        None, "TPU name or address for --strategy tpu (default: found from the environment, as "
        "TPUClusterResolver does; 'local' on a TPU VM).")
    precision: str = settings.setting("float32", "network compute precision.", choices=PRECISIONS)

    def __post_init__(self):
        if isinstance(self.scales, str) or not isinstance(self.scales, tuple):
            try:
                object.__setattr__(self, "scales", scales_from_text(self.scales))
            except ValueError as e:
                raise UserError(f"--scales={self.scales!r}: {e}") from None
        object.__setattr__(self, "dataset_options", tuple(self.dataset_options))
        settings.check_settings(self)
        if not self.weights:
            raise UserError("--weights is required (a psp-convert output, or psp-train's <workdir>/model)")
        self._check_combinations()

    def _check_combinations(self):
        """A flag that only makes sense with another one is refused alone, naming both."""
        needs = [
            ("tpu", self.tpu is not None, "--strategy tpu", self.strategy == "tpu"),
            ("tolerance", self.tolerance != DEFAULT_TOLERANCE, "--expect paper", self.expect is not None),
            ("overwrite", self.overwrite, "--output_dir or --show_dir",
             self.output_dir is not None or self.show_dir is not None),
            ("cityscapes_submission", self.cityscapes_submission, "--output_dir", self.output_dir is not None),
            ("show_max", self.show_max is not None, "--show_dir", self.show_dir is not None),
        ]
        for flag, given, what, satisfied in needs:
            if given and not satisfied:
                raise UserError(f"--{flag} needs {what}")
