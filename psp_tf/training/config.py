"""The resolved training configuration: one typed record, validated before anything starts.

Flags (train.py) and tests build a `TrainConfig`; `resolve()` fills what was left to the preset's
recipe and checks every value and every contradiction, raising `UserError` with one line naming the
flag. The result is written to the work directory as `train_config.json` before step 0, and a resumed
run must agree with it (paths and the strategy may change; the recipe may not).
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

from psp_tf import checks
from psp_tf.errors import UserError
from psp_tf.outputs import atomic_file, refuse_overlap
from psp_tf.presets import PRESETS, get_preset, pyramid_bins_problem, size_pair

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
MIXED_PRECISION = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}

# Per-preset recipe for the flags left at None. Paper presets: PSPNet §5.1 (batch 16, 150K iterations
# on ADE20K, 30K on VOC, 90K on Cityscapes). `tiny`: the demo, tuned to reach mIoU >= 0.70 on the
# synthetic val split in well under 10 minutes on 2 CPU cores (see README / benchmarks).
RECIPES = {
    "pspnet50_ade20k": dict(steps=150_000, batch_size=16, lr=0.01, eval_split="validation"),
    "pspnet101_voc2012": dict(steps=30_000, batch_size=16, lr=0.01, eval_split="val"),
    "pspnet101_cityscapes": dict(steps=90_000, batch_size=16, lr=0.01, eval_split="val"),
    # From scratch (no --init), a narrow net. Measured on 2 shared CPU cores (README): lr 0.01 reached
    # mIoU 0.57 in 1200 steps; lr 0.05 reached 0.733 in 1500 steps, but only 0.691 once the augmentation's
    # sampler moved to XLA (same maths, other float rounding): too close to the 0.70 bar. 2200 steps
    # reached 0.815 in 7 min 9 s on a quiet machine.
    "tiny": dict(steps=2200, batch_size=8, lr=0.05, eval_split="val"),
}
DEFAULT_RECIPE = dict(steps=30_000, batch_size=16, lr=0.01, eval_split="val")

# Keys that may differ between the run that wrote a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("workdir", "data_dir", "tfrecords", "strategy", "tpu", "checkpoint_every",
                     "eval_every", "eval_split")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (the flags of train.py, same names and meanings).

    None means "from the preset's recipe / the preset" and is replaced by `resolve()`.
    """

    preset: str = "tiny"
    dataset: Optional[str] = None  # default: the preset's dataset
    data_dir: Optional[str] = None
    dataset_options: Tuple[str, ...] = ()  # "key=value" reader options, e.g. num_classes=5 for folder
    tfrecords: Optional[str] = None  # directory of write_tfrecords shards <split>-*.tfrecord (local or gs://)
    split: str = "train"
    eval_split: Optional[str] = None
    stem: Optional[str] = None  # 'deep' or 'resnet' (ImageNet --init files); default: the preset's
    init: str = "none"  # 'none', a converted PSPNet directory, or a Keras ResNet .h5/.weights.h5
    fresh_classifier: bool = False
    workdir: str = "runs/tiny_synthetic"
    steps: Optional[int] = None
    batch_size: Optional[int] = None  # global, over all replicas
    crop_size: Optional[Tuple[int, int]] = None
    lr: Optional[float] = None  # default: the recipe's (0.01, the paper's; 0.05 for tiny)
    poly_power: float = 0.9
    momentum: float = 0.9
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    l2sp_alpha: float = 0.0
    l2sp_beta: Optional[float] = None
    aux_weight: float = 0.4
    sync_bn: bool = False
    freeze_bn: bool = False
    mixed_precision: str = "none"
    strategy: str = "default"
    tpu: Optional[str] = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0
    seed: int = 0

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def precision(self) -> str:
        """The model's compute precision (build_pspnet's `precision`)."""
        return MIXED_PRECISION[self.mixed_precision]


def _local_workdir(workdir):
    """The work directory as an absolute local path; a URL (gs://...) is refused, not made relative.

    Checkpoint locks, leftover sweeps and the final model directory need a local (or mounted) file
    system; os.path.abspath would silently turn 'gs://b/run' into './gs:/b/run'.
    """
    if "://" in str(workdir):
        raise UserError(f"--workdir {workdir}: work directories must be local or mounted paths "
                        f"(TFRecords on gs:// are fine: --tfrecords)")
    return os.path.abspath(workdir)


def resolve(config: TrainConfig) -> TrainConfig:
    """Fills recipe defaults and validates everything that can be checked without TensorFlow.

    Raises:
      UserError: one line naming the flag and what is wrong.
    """
    if config.preset not in PRESETS:
        raise UserError(f"--preset {config.preset!r} is unknown; valid presets: {', '.join(sorted(PRESETS))}")
    if config.stem not in (None, "deep", "resnet"):
        raise UserError(f"--stem={config.stem!r} is not one of 'deep', 'resnet'")
    preset = get_preset(config.preset)
    recipe = RECIPES.get(config.preset, DEFAULT_RECIPE)
    crop = config.crop_size if config.crop_size is not None else preset.crop_size
    config = dataclasses.replace(
        config,
        dataset=config.dataset or preset.dataset,
        steps=config.steps if config.steps is not None else recipe["steps"],
        batch_size=config.batch_size if config.batch_size is not None else recipe["batch_size"],
        lr=config.lr if config.lr is not None else recipe["lr"],
        eval_split=config.eval_split or recipe["eval_split"],
        crop_size=size_pair(crop),
        workdir=_local_workdir(config.workdir))
    _check_ranges(config)
    _check_contradictions(config)
    _check_crop(config, preset)
    # The workdir is written (checkpoints, <workdir>/model replaced at the end): it must not hold an input.
    refuse_overlap([("--workdir", config.workdir)],
                   [("--data_dir", config.data_dir), ("--tfrecords", config.tfrecords),
                    ("--init", None if config.init == "none" else config.init)])
    return config


# The numeric flags of train.py and the values each accepts (psp_tf.checks: finite, in range).
RANGES = {
    "steps": checks.POSITIVE_INT, "batch_size": checks.POSITIVE_INT, "lr": checks.POSITIVE,
    "poly_power": checks.NON_NEGATIVE, "momentum": checks.FRACTION, "head_lr_mult": checks.POSITIVE,
    "weight_decay": checks.NON_NEGATIVE, "l2sp_alpha": checks.NON_NEGATIVE,
    "l2sp_beta": checks.NON_NEGATIVE, "aux_weight": checks.NON_NEGATIVE,
    "checkpoint_every": checks.POSITIVE_INT, "keep_checkpoints": checks.POSITIVE_INT,
    "eval_every": checks.NON_NEGATIVE_INT, "seed": checks.SEED,
}


def _check_ranges(config):
    for flag, rule in RANGES.items():
        checks.check(flag, getattr(config, flag), rule, allow_none=flag == "l2sp_beta")
    for side in config.crop_size:
        checks.check("crop_size", side, checks.POSITIVE_INT)
    choices = [
        ("mixed_precision", config.mixed_precision in MIXED_PRECISION, f"one of {', '.join(MIXED_PRECISION)}"),
        ("strategy", config.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
        ("split", bool(config.split), "a split name"),
        ("workdir", bool(config.workdir), "a directory"),
    ]
    for flag, ok, expected in choices:
        if not ok:
            raise UserError(f"--{flag}={getattr(config, flag)!r} must be {expected}")


def _check_contradictions(config):
    if config.l2sp_alpha > 0 and config.init == "none":
        raise UserError("--l2sp_alpha > 0 pulls weights towards the ones loaded by --init, but --init is none")
    if config.l2sp_beta is not None and config.l2sp_alpha == 0:
        raise UserError("--l2sp_beta is the L2-SP decay of new layers and needs --l2sp_alpha > 0; "
                        "for plain weight decay use --weight_decay")
    if config.sync_bn and config.freeze_bn:
        raise UserError("--sync_bn and --freeze_bn contradict: frozen BN uses its moving statistics")
    if config.tpu and config.strategy != "tpu":
        raise UserError(f"--tpu={config.tpu!r} needs --strategy tpu (got --strategy {config.strategy})")
    if config.strategy == "tpu" and not config.tpu:
        raise UserError("--strategy tpu needs --tpu NAME (the Cloud TPU name, or 'local' on a TPU VM)")
    if config.strategy == "tpu" and config.mixed_precision == "fp16":
        raise UserError("--mixed_precision fp16 is not supported on TPU; use bf16")
    if config.strategy == "tpu" and config.tfrecords is None:
        raise UserError("--strategy tpu reads its training data from --tfrecords (gs://...); "
                        "TPU workers cannot read local files")
    if config.tfrecords is not None and config.data_dir is not None:
        raise UserError("--tfrecords and --data_dir contradict: the training and evaluation data come "
                        "from one of them")
    if config.fresh_classifier and config.init == "none":
        raise UserError("--fresh_classifier only applies with --init (without it every layer is new)")


def _check_crop(config, preset):
    problem = pyramid_bins_problem(config.crop_size, preset.bins)
    if problem:
        raise UserError(f"--crop_size={problem} (--preset {preset.name})")


def save(config: TrainConfig, workdir: str):
    """Writes `train_config.json` (atomically); refuses a workdir holding a different run.

    Raises:
      UserError: the workdir's existing config differs in a key that a resume may not change.
    """
    path = os.path.join(workdir, "train_config.json")
    if os.path.exists(path):
        check_resume_compatible(load(path), config, path)
    with atomic_file(path, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    return path


def load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


# TrainConfig fields whose train.py flag has another name (the flag is repeated, one option each).
FLAG_NAMES = {"dataset_options": "dataset_option"}


def check_resume_compatible(previous: dict, config: TrainConfig, path: str):
    current = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as in the file
    for key, value in current.items():
        if key in RESUMABLE_CHANGES or key not in previous:
            continue
        if previous[key] != value:
            flag = FLAG_NAMES.get(key, key)
            raise UserError(f"--{flag}={value!r} differs from {previous[key]!r} of the run in {path}; "
                            f"use the same flags to resume, or another --workdir")
