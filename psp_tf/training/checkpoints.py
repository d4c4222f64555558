"""Checkpoints that are only ever called good when they are: finite, complete, of this recipe.

- Every checkpoint carries the run's resolved recipe (`Recipe`, inside the checkpoint), so a resume
  is checked against the checkpoint itself even when `train_config.json` is gone.
- The train step reduces every float variable the checkpoint holds (weights, BN statistics,
  optimizer slots) to one "all finite" flag (`all_finite`); the loop saves nothing once it is false.
- Resume (`restore_newest_intact`) does not trust the `checkpoint` state file: it lists the
  `ckpt-N` files on disk, restores the newest, verifies it (every variable matched, finite, step N)
  and falls back to the next older one, saying which it skipped and why.
- One run per work directory (`claim_directory`, an flock held for the run), so the temporaries of
  an interrupted save (`ckpt-N_temp/`, `checkpoint.tmp<hex>`) are known to be stale and removed.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf

from psp_tf.errors import UserError
from psp_tf.outputs import atomic_file, exclusive_directory, require_directory_place
from psp_tf.training import config as config_lib

PREFIX = "ckpt"  # tf.train.CheckpointManager's default checkpoint_name
STATE_FILE = "checkpoint"
_CHECKPOINT_FILE = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$")
# What an interrupted save leaves: functional_saver writes shards to "<prefix>_temp/" (with a uuid
# suffix on some filesystems), file_io.atomic_write_string_to_file writes "checkpoint.tmp<uuid4 hex>".
_TEMPORARY = re.compile(rf"^({PREFIX}-\d+_temp(_[0-9a-f]+)?|{STATE_FILE}\.tmp[0-9a-f]{{32}})$")


class Recipe(tf.train.experimental.PythonState):
    """The resolved TrainConfig as JSON, saved inside every checkpoint (the recipe travels with it)."""

    def __init__(self, config):
        self.text = json.dumps(config.to_dict(), sort_keys=True)
        self.restored = None

    def serialize(self):
        return self.text

    def deserialize(self, string_value):
        self.restored = string_value.decode() if isinstance(string_value, bytes) else string_value


def checked_variables(state):
    """The float variables a checkpoint of `state` holds: model weights, BN statistics, optimizer slots."""
    seen, variables = set(), []
    for v in list(state.model.weights) + list(state.optimizer.variables):
        if id(v) not in seen and tf.as_dtype(v.dtype).is_floating:
            seen.add(id(v))
            variables.append(v)
    return variables


def all_finite(variables):
    """One fused reduction: True when every value of every variable is finite (a graph op, per step)."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


def nonfinite_names(variables):
    """Paths of the variables holding NaN or inf (eager; only called once the fused check failed)."""
    return [v.path for v in variables if not np.isfinite(np.asarray(v)).all()]


def describe_nonfinite(names, total, limit=3):
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} of {total} variables hold NaN/inf ({shown})"


def check_workdir(workdir):
    """Refuses a --workdir that cannot hold a run, before anything is written.

    Raises:
      UserError: the work directory, or a path the run keeps inside it, is blocked by a file.
    """
    require_directory_place(workdir, "--workdir")
    for name, what in (("checkpoints", "checkpoints"), ("tensorboard", "TensorBoard logs"),
                       ("model", "trained model")):
        path = os.path.join(workdir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UserError(f"{path} is a file, but the run keeps its {what} in that directory; "
                            "move the file away or use another --workdir")
    path = os.path.join(workdir, "train_config.json")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, but the run writes its config to that file")


@contextlib.contextmanager
def claim_directory(directory, checkpoint_dir):
    """Holds an exclusive lock on `directory` for one run and removes the stale temporaries of
    `checkpoint_dir` (created if missing).

    The lock (flock on the directory itself: no lock file is left behind) makes the temporaries of
    an interrupted save certainly stale: no other run of ours can be writing there.

    Raises:
      UserError: another run holds the directory, or it cannot be created.
    """
    with exclusive_directory(directory, "another training run; wait for it to end or use another --workdir"):
        try:
            os.makedirs(checkpoint_dir, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {e.filename or checkpoint_dir}: {e.strerror}") from None
        remove_stale_temporaries(checkpoint_dir)
        yield directory


def remove_stale_temporaries(directory):
    """Removes what interrupted checkpoint saves left in `directory` (call with the lock held)."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if _TEMPORARY.match(name):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
    return removed


def _listed_steps(directory, log):
    """Steps named by the state file (none when it is absent); an unreadable one is reported and ignored."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.lexists(path):
        return set()
    # TensorFlow logs its own ParseError warnings on a garbage state file; we say it once, below.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError):  # an empty model_checkpoint_path is a ValueError
        state = None
    finally:
        logger.setLevel(level)
    if state is None:
        log(f"ignored the unreadable checkpoint state file {path}; looking for checkpoints on disk")
        return set()
    steps = set()
    for prefix in [state.model_checkpoint_path, *state.all_model_checkpoint_paths]:
        match = re.match(rf"^{PREFIX}-(\d+)$", os.path.basename(prefix))
        if match:
            steps.add(int(match.group(1)))
    return steps


def find_checkpoints(directory, log=print):
    """Steps of the checkpoints in `directory`, newest first, from its files and its state file."""
    if not os.path.isdir(directory):
        return []
    steps = _listed_steps(directory, log)
    for name in os.listdir(directory):
        match = _CHECKPOINT_FILE.match(name)
        if match:
            steps.add(int(match.group(1)))
    return sorted(steps, reverse=True)


def _unreadable(error):
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return f"cannot be read ({lines[-1].strip()[:200]})"


def _verify_restore(state, prefix, step):
    """Restores `prefix` into `state`; returns why it is unusable, or None when it is good."""
    recipe = state.checkpoint.recipe
    recipe.restored = None
    if not os.path.exists(prefix + ".index"):
        return f"its index file {prefix}.index is missing"
    try:
        keys = [name for name, _ in tf.train.list_variables(prefix)]
    except Exception as e:  # noqa: BLE001
        return _unreadable(e)
    if not any(key.startswith("recipe/") for key in keys):
        return "records no training recipe (written by an older psp_tf)"
    try:
        # assert_consumed: every variable of the run got a value and every value found a variable.
        state.checkpoint.restore(prefix).assert_consumed()
    except Exception as e:  # noqa: BLE001  a damaged file fails in many ways (OpError, IndexError, ...)
        return _unreadable(e)
    if recipe.restored is None:
        return "records no training recipe (written by an older psp_tf)"
    restored_step = int(state.step.numpy())
    if restored_step != step:
        return f"holds step {restored_step}, not {step}"
    variables = checked_variables(state)
    bad = nonfinite_names(variables)
    if bad:
        return describe_nonfinite(bad, len(variables))
    return None


def restore_newest_intact(state, directory, config, log=print):
    """Restores the newest verified checkpoint of `directory` into `state`.

    Args:
      state: the TrainState (its checkpoint has a `recipe` Recipe).
      directory: the chief's checkpoint directory.
      config: the resolved TrainConfig of this run (compared with the checkpoint's recipe).
      log: where "skipped ..." and "resumed from ..." lines go.

    Returns:
      (step, steps of the older checkpoints present): (0, []) when the directory has none.

    Raises:
      UserError: checkpoints exist but none is usable (one line naming each and why), or the
        restored checkpoint was written with another recipe.
    """
    steps = find_checkpoints(directory, log)
    reasons = []
    for step in steps:
        prefix = os.path.join(directory, f"{PREFIX}-{step}")
        reason = _verify_restore(state, prefix, step)
        if reason is None:
            config_lib.check_resume_compatible(json.loads(state.checkpoint.recipe.restored), config, prefix)
            for skipped in reasons:
                log(f"skipped {skipped}")
            log(f"resumed from {prefix} at step {step}")
            return step, [s for s in steps if s < step]
        reasons.append(f"{prefix}: {reason}")
    if reasons:
        raise UserError(f"no usable checkpoint in {directory} (refusing to start over): " + "; ".join(reasons))
    return 0, []


def discard_unreadable_state_file(directory, log=print):
    """Removes a state file that names no checkpoint (only called when none is on disk): otherwise
    CheckpointManager fails on it (a ValueError or UnicodeDecodeError traceback)."""
    path = os.path.join(directory, STATE_FILE)
    if os.path.isfile(path):
        os.remove(path)
        log(f"removed {path}: it names no checkpoint and none is on disk; starting at step 0")


def write_state_file(directory, latest, older):
    """Points the state file at `latest` (+ the older checkpoints on disk) so CheckpointManager keeps
    rotating them; a newer damaged checkpoint is left out (and overwritten when its step is saved).

    Timestamps are written because CheckpointManager never deletes a checkpoint whose timestamp is not
    after `last_preserved_timestamp` (its keep_checkpoint_every_n_hours rule).
    """
    now = time.time()
    steps = sorted(older) + [latest]
    lines = [f'model_checkpoint_path: "{PREFIX}-{latest}"']
    lines += [f'all_model_checkpoint_paths: "{PREFIX}-{s}"' for s in steps]
    lines += [f"all_model_checkpoint_timestamps: {now - 1e-3 * (len(steps) - i):.6f}" for i in range(len(steps))]
    lines.append(f"last_preserved_timestamp: {now - 1:.6f}")
    with atomic_file(os.path.join(directory, STATE_FILE), "w") as f:
        f.write("\n".join(lines) + "\n")
