"""The resolved training configuration: one typed record, validated before anything starts.

The fields are declared once, with their help and accepted values (psp_tf.settings); train.py's flags
are derived from them (psp_tf/cli/train.py). Flags and tests build a `TrainConfig`; its construction
checks every value, `resolve()` fills what was left to the preset's recipe and checks every
contradiction, raising `UserError` with one line naming the flag. The trainer then resolves the
network and augmentation that train (`network`, `augment`: preset + flags + the data's label space),
and that record is written to the work directory as `train_config.json` before step 0; a resumed
run must agree with it (paths, the strategy and how steps execute may change; the recipe may not).
This module is light (no TensorFlow): train.py reads it before TensorFlow starts.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

from psp_tf import checks
from psp_tf.distribute import STRATEGIES
from psp_tf.errors import UserError
from psp_tf.outputs import absolute, atomic_file, refuse_overlap
from psp_tf.presets import PRESETS, PSPNetConfig, get_preset, pyramid_bins_problem, size_pair
from psp_tf.settings import check_settings, declared, flag_name, setting

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

# Keys that may differ between the run that wrote a checkpoint and the run that resumes it: where the
# files lie and how the steps are executed, not what is computed.
RESUMABLE_CHANGES = ("workdir", "data_dir", "tfrecords", "strategy", "tpu", "checkpoint_every",
                     "eval_every", "eval_split", "eval_max_images", "steps_per_execution", "jit_compile")

NO_EVALUATION = "none"  # --eval_split none: train without evaluating

# Train steps per tf.function call when --steps_per_execution is not given: a TPU's host must not set
# the pace (one Python round trip per step would), elsewhere a few steps hide the per-call overhead
# while progress lines and SIGTERM still answer within seconds.
STEPS_PER_EXECUTION = {"default": 10, "mirrored": 10, "multiworker": 10, "tpu": 100}


def _parse_crop(text):
    """--crop_size: one side (square) or HxW."""
    parts = str(text).lower().split("x")
    try:
        sides = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError("must be a side (e.g. 473) or HxW (e.g. 473x713)") from None
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2:
        raise ValueError("must be a side (e.g. 473) or HxW (e.g. 473x713)")
    return sides


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; train.py's flags are derived from these fields.

    None means "from the preset's recipe / the preset" and is replaced by `resolve()`. `network`
    and `augment` are not flags: the trainer resolves them (from the preset, the flags and the
    training data's label space) before step 0, and that record is what `train_config.json` holds
    and every later stage reads.
    """

    preset: str = setting("tiny", "Model preset (psp_tf.presets).", choices=tuple(sorted(PRESETS)))
    dataset: Optional[str] = setting(None, "Dataset name (psp_tf.data); default: the preset's dataset.")
    data_dir: Optional[str] = setting(None, "Dataset root directory (not needed for synthetic).", path=True)
    dataset_options: Tuple[str, ...] = setting(
        (), "A dataset reader option key=value, e.g. num_classes=5 or class_names=a,b,c for "
        "--dataset folder, coarse=true for cityscapes.", flag="dataset_option")
    tfrecords: Optional[str] = setting(
        None, "Directory (local or gs://) of psp-write-tfrecords shards: reads <dir>/<split>-*.tfrecord "
        "(and --eval_split's), instead of --data_dir.", path=True)
    split: str = setting("train", "Training split.")
    eval_split: Optional[str] = setting(
        None, "Evaluation split (default: the dataset's validation split; for --dataset folder 'val' "
        "when the folder has one, else none); 'none': train without evaluating.")
    eval_max_images: Optional[int] = setting(
        None, "Evaluate on the first N images of --eval_split only (default: all).", rule=checks.POSITIVE_INT)
    stem: Optional[str] = setting(
        None, "Override the preset's stem: 'resnet' (7x7/64) to start from a keras.applications ImageNet "
        "ResNet with --init (default: the preset's).", choices=("deep", "resnet"))
    init: str = setting("none", "'none', a converted PSPNet directory, or a Keras ResNet50/101 ImageNet "
                        ".h5/.weights.h5 file (presets with stem 'resnet').", path=True)
    fresh_classifier: bool = setting(False, "With a PSPNet --init: train a new classifier (required when "
                                     "its classes differ from the dataset's).")
    workdir: Optional[str] = setting(
        None, "Checkpoints, config, TensorBoard, the trained model; a rerun resumes (default: "
        "runs/<preset>_<dataset>).", output=True)
    steps: Optional[int] = setting(None, "Training steps (default: the preset's recipe).", rule=checks.POSITIVE_INT)
    batch_size: Optional[int] = setting(None, "Global batch size over all replicas (default: recipe).",
                                        rule=checks.POSITIVE_INT)
    crop_size: Optional[Tuple[int, int]] = setting(
        None, "Training crop: a side (square) or HxW (default: the preset's crop).", parse=_parse_crop)
    lr: Optional[float] = setting(None, "Base learning rate (default: the recipe's: 0.01, the paper's; "
                                  "0.05 for tiny).", rule=checks.POSITIVE)
    poly_power: float = setting(0.9, "Poly schedule exponent: lr * (1 - step/steps) ** power.",
                                rule=checks.NON_NEGATIVE)
    momentum: float = setting(0.9, "SGD momentum.", rule=checks.FRACTION)
    head_lr_mult: float = setting(10.0, "lr multiplier of the layers --init did not provide.", rule=checks.POSITIVE)
    weight_decay: float = setting(1e-4, "Plain L2 decay (Caffe convention: wd/2 * |w|^2) of all conv kernels; "
                                  "with --l2sp_alpha > 0 the default decay of new layers.", rule=checks.NON_NEGATIVE)
    l2sp_alpha: float = setting(0.0, "L2-SP: alpha/2 * |w - w0|^2 for kernels loaded by --init (0: off).",
                                rule=checks.NON_NEGATIVE)
    l2sp_beta: Optional[float] = setting(None, "L2-SP: beta/2 * |w|^2 for new layers (default: --weight_decay).",
                                         rule=checks.NON_NEGATIVE)
    aux_weight: float = setting(0.4, "Weight of the auxiliary loss (0: no aux head).", rule=checks.NON_NEGATIVE)
    sync_bn: bool = setting(False, "Synchronise BN statistics across all replicas.")
    freeze_bn: bool = setting(False, "BN in inference mode with gamma/beta frozen.")
    mixed_precision: str = setting("none", "Compute precision (fp16 uses loss scaling).",
                                   choices=tuple(MIXED_PRECISION))
    strategy: str = setting("default", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: Optional[str] = setting(None, "TPU name for --strategy tpu ('local' on a TPU VM).")
    checkpoint_every: int = setting(500, "Steps between checkpoints.", rule=checks.POSITIVE_INT)
    keep_checkpoints: int = setting(3, "Checkpoints kept.", rule=checks.POSITIVE_INT)
    eval_every: int = setting(0, "Steps between evaluations (0: only at the end).", rule=checks.NON_NEGATIVE_INT)
    steps_per_execution: Optional[int] = setting(
        None, "Train steps per compiled call; metrics reach the host once per call (default: 100 for "
        "--strategy tpu, else 10).", rule=checks.POSITIVE_INT)
    jit_compile: Optional[bool] = setting(
        None, "Compile the train step with XLA (default: on for --strategy default on a GPU/TPU, off on "
        "CPU and under the other strategies; see README for the measured speed).")
    seed: int = setting(0, "Seed of initialisation, data order and augmentation.", rule=checks.SEED)
    network: Optional[PSPNetConfig] = setting(None, "The network that trains (resolved, not a flag).")
    augment: Optional[dict] = setting(None, "The training augmentation (resolved, not a flag).")

    def __post_init__(self):
        check_settings(self)

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def precision(self) -> str:
        """The model's compute precision (build_pspnet's `precision`)."""
        return MIXED_PRECISION[self.mixed_precision]

    @property
    def evaluates(self) -> bool:
        return self.eval_split != NO_EVALUATION


# The fields that the trainer resolves itself; train.py has no flag for them.
RESOLVED_FIELDS = ("network", "augment")

# The numeric fields and the values each accepts (from their declarations).
RANGES = {f.name: declared(f).rule for f in dataclasses.fields(TrainConfig) if declared(f).rule is not None}


def default_workdir(preset, dataset):
    """runs/<preset>_<dataset>: each run its own work directory unless --workdir says otherwise."""
    return os.path.join("runs", f"{preset}_{dataset}")


def _local_workdir(workdir):
    """The work directory as an absolute local path; a URL (gs://...) is refused, not made relative.

    Checkpoint locks, leftover sweeps and the final model directory need a local (or mounted) file
    system; making it absolute would silently turn 'gs://b/run' into './gs:/b/run'.
    """
    if "://" in str(workdir):
        raise UserError(f"--workdir {workdir}: work directories must be local or mounted paths "
                        f"(TFRecords on gs:// are fine: --tfrecords)")
    return absolute(workdir)


def resolve(config: TrainConfig) -> TrainConfig:
    """Fills recipe defaults and validates everything that can be checked without TensorFlow.

    Idempotent: a resolved config comes back unchanged. `network` and `augment` are filled by the
    trainer once the training data's label space is known (psp_tf.training.inputs.resolve_run).

    Raises:
      UserError: one line naming the flag and what is wrong.
    """
    preset = get_preset(config.preset)
    recipe = RECIPES.get(config.preset, DEFAULT_RECIPE)
    crop = config.crop_size if config.crop_size is not None else preset.crop_size
    dataset = config.dataset or preset.dataset
    config = dataclasses.replace(
        config,
        dataset=dataset,
        steps=config.steps if config.steps is not None else recipe["steps"],
        batch_size=config.batch_size if config.batch_size is not None else recipe["batch_size"],
        lr=config.lr if config.lr is not None else recipe["lr"],
        eval_split=config.eval_split or _default_eval_split(config, dataset, recipe),
        crop_size=size_pair(crop),
        steps_per_execution=config.steps_per_execution or STEPS_PER_EXECUTION[config.strategy],
        workdir=_local_workdir(config.workdir or default_workdir(config.preset, dataset)))
    _check_named(config)
    _check_contradictions(config)
    _check_crop(config, preset)
    # The workdir is written (checkpoints, <workdir>/model replaced at the end): it must not hold an input.
    refuse_overlap([("--workdir", config.workdir)],
                   [("--data_dir", config.data_dir), ("--tfrecords", config.tfrecords),
                    ("--init", None if config.init == "none" else config.init)])
    return config


def _default_eval_split(config, dataset, recipe):
    """The recipe's validation split; for a user's folder the 'val' split only where it exists."""
    if dataset != "folder" or config.data_dir is None:
        return recipe["eval_split"]
    split = recipe["eval_split"]
    has_split = (os.path.isdir(os.path.join(config.data_dir, "images", split))
                 or os.path.isfile(os.path.join(config.data_dir, split + ".txt")))
    return split if has_split else NO_EVALUATION


def _check_named(config):
    for flag in ("split", "workdir"):
        if not getattr(config, flag):
            raise UserError(f"--{flag}={getattr(config, flag)!r} must be {'a split name' if flag == 'split' else 'a directory'}")
    for side in config.crop_size:
        checks.check("crop_size", side, checks.POSITIVE_INT)


def _check_contradictions(config):
    if not config.evaluates and (config.eval_every or config.eval_max_images is not None):
        flag = "--eval_every" if config.eval_every else "--eval_max_images"
        raise UserError(f"{flag} sets the evaluation, but --eval_split none trains without one")
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
    if config.tfrecords is not None and config.dataset_options:
        # The shards were written by a reader with its options applied; unread options would be
        # recorded in train_config.json as if they had shaped the data.
        raise UserError(f"--dataset_option {config.dataset_options[0]} has no effect with --tfrecords (the "
                        f"shards hold what the reader made of the data): give it to psp-write-tfrecords")
    if config.fresh_classifier and config.init == "none":
        raise UserError("--fresh_classifier only applies with --init (without it every layer is new)")


def _check_crop(config, preset):
    problem = pyramid_bins_problem(config.crop_size, preset.bins)
    if problem:
        raise UserError(f"--crop_size={problem} (--preset {preset.name})")


def check_recorded(config: TrainConfig, workdir: str):
    """Refuses a workdir whose `train_config.json` records a different run (reads only).

    Raises:
      UserError: that config is no record, or differs in a key that a resume may not change.
    """
    path = os.path.join(workdir, "train_config.json")
    if os.path.exists(path):
        check_resume_compatible(load(path), config, path)
    return path


def save(config: TrainConfig, workdir: str):
    """Writes `train_config.json` (atomically); refuses a workdir holding a different run.

    Raises:
      UserError: the workdir's existing config differs in a key that a resume may not change.
    """
    path = check_recorded(config, workdir)
    with atomic_file(path, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    return path


def load(path: str) -> dict:
    """A `train_config.json` as written by `save`.

    Raises:
      UserError: unreadable, not JSON, or JSON that is no psp-train record (not an object with the
        run's preset, or a resolved config that is not an object).
    """
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if (not isinstance(record, dict) or not isinstance(record.get("preset"), str)
            or any(not isinstance(record.get(key) or {}, dict) for key in RESOLVED_FIELDS)):
        raise UserError(f"{path} is not a psp-train record (a JSON object with the run's preset and its "
                        f"resolved configs); move it away or use another --workdir")
    return record


_FLAG_NAMES = {f.name: flag_name(f) for f in dataclasses.fields(TrainConfig)}


def check_resume_compatible(previous: dict, config: TrainConfig, path: str):
    current = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as in the file
    for key, value in current.items():
        if key in RESUMABLE_CHANGES or key not in previous:
            continue
        if key in RESOLVED_FIELDS and not (previous[key] and value):  # a record from before it was resolved
            continue
        if key == "dataset_options" and config.tfrecords is not None:  # never read with --tfrecords
            continue
        if previous[key] != value and key in RESOLVED_FIELDS:
            changed = sorted(k for k in set(value) | set(previous[key]) if value.get(k) != previous[key].get(k))
            raise UserError(f"the resolved {key} config differs from the run in {path} in "
                            f"{', '.join(changed)}; use the same flags and data to resume, or another --workdir")
        if previous[key] != value:
            flag = _FLAG_NAMES.get(key, key)
            raise UserError(f"--{flag}={value!r} differs from {previous[key]!r} of the run in {path}; "
                            f"use the same flags to resume, or another --workdir")
