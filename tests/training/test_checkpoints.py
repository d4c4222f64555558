"""Checkpoints are never called good unless they are: damaged ones are skipped on resume, the recipe
travels inside them, stale temporaries are removed, a blocked work directory is one error line."""

import dataclasses
import fcntl
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from psp_tf.errors import UserError
from psp_tf.training import TrainConfig, resolve
from psp_tf.training.trainer import TrainingDiverged, train
from psp_tf.training import checkpoints
from psp_tf.training.inputs import resolve_run
from psp_tf.training.state import build_state
from support.training import REPO, make_input_fn

pytestmark = pytest.mark.heavy(35)

STEPS = (2, 4, 6)
# The smallest crop the tiny preset's bins (1, 2, 3, 6) accept (a 6x6 feature map), for the runs whose
# claims (what is saved, skipped, refused) do not depend on the size.
SMALL = 41


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    config = resolve_run(resolve(TrainConfig(workdir=str(tmp_path_factory.mktemp("run")), steps=8, batch_size=2,
                                             crop_size=89)), None)
    built = build_state(config, tf.distribute.get_strategy(), make_input_fn(crop=89))
    built.config = config
    built.initial = [np.array(v) for v in checkpoints.checked_variables(built)]
    return built


def _write(state, directory, steps=STEPS, recipe=None, poison=None, step_value=None):
    """Saves one checkpoint per step (variables perturbed by the step) through a CheckpointManager."""
    state.checkpoint.recipe.text = json.dumps((recipe or state.config).to_dict(), sort_keys=True)
    manager = tf.train.CheckpointManager(state.checkpoint, directory, max_to_keep=5)
    variables = checkpoints.checked_variables(state)
    for step in steps:
        for v, start in zip(variables, state.initial):
            v.assign(start + np.float32(step) if v.path != "SGD/learning_rate" else start)
        if poison == step:
            variables[3].assign(np.full(variables[3].shape, np.inf, np.float32))
        state.step.assign(step_value if step_value is not None and step == steps[-1] else step)
        manager.save(checkpoint_number=step)
    state.checkpoint.recipe.text = json.dumps(state.config.to_dict(), sort_keys=True)
    return directory


def _restore(state, directory, config=None):
    lines = []
    step, older = checkpoints.restore_newest_intact(state, directory, config or state.config, lines.append)
    return step, older, lines


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _garbage(path):
    open(path, "wb").write(b"\x00garbage\xff" * 7)


def _flip_a_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage,file", [(_truncate, "data-00000-of-00001"), (_flip_a_byte, "data-00000-of-00001"),
                                         (_garbage, "index"), (_truncate, "index"), (os.remove, "index")])
def test_a_damaged_newest_checkpoint_is_skipped_saying_why(state, tmp_path, damage, file):
    directory = _write(state, str(tmp_path / "c"))
    damage(os.path.join(directory, f"ckpt-6.{file}"))
    step, older, lines = _restore(state, directory)
    assert (step, older) == (4, [2])
    assert lines[0].startswith(f"skipped {directory}/ckpt-6: "), lines
    assert lines[-1] == f"resumed from {directory}/ckpt-4 at step 4"
    for v, start in zip(checkpoints.checked_variables(state), state.initial):  # ckpt-4's values, all of them
        if v.path != "SGD/learning_rate":
            np.testing.assert_array_equal(np.array(v), start + np.float32(4), err_msg=v.path)


@pytest.mark.parametrize("content", [b"\x00garbage{{", b"", b'model_checkpoint_path: ""\n',
                                     b'model_checkpoint_path: "ckpt-99"\n'])
def test_an_unreadable_state_file_neither_restarts_nor_rotates_the_checkpoints_away(state, tmp_path, content,
                                                                                    caplog):
    directory = _write(state, str(tmp_path / "c"), steps=(2, 4))
    open(os.path.join(directory, "checkpoint"), "wb").write(content)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        step, older, lines = _restore(state, directory)
    if b"ckpt-99" in content:  # names a checkpoint that is not there: skipped, the newest on disk used
        assert lines[0].startswith(f"skipped {directory}/ckpt-99: its index file")
    else:
        assert lines[0].startswith("ignored the unreadable checkpoint state file")
    # Said once, by us: TensorFlow's own ParseError warnings do not reach the terminal.
    assert not [r for r in caplog.records if r.name == "tensorflow"], caplog.text
    assert (step, older) == (4, [2])
    # The trainer then rewrites the state file; CheckpointManager keeps rotating exactly these files.
    checkpoints.write_state_file(directory, step, older)
    manager = tf.train.CheckpointManager(state.checkpoint, directory, max_to_keep=2)
    assert manager.checkpoints == [f"{directory}/ckpt-2", f"{directory}/ckpt-4"]
    manager.save(checkpoint_number=6)
    assert sorted(n for n in os.listdir(directory) if n.endswith(".index")) == ["ckpt-4.index", "ckpt-6.index"]


def test_a_garbage_state_file_alone_is_removed_so_a_new_run_can_start(state, tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "checkpoint").write_bytes(b"\xff\x00garbage")
    step, older, lines = _restore(state, str(directory))
    assert (step, older) == (0, []) and lines[0].startswith("ignored the unreadable checkpoint state file")
    checkpoints.discard_unreadable_state_file(str(directory), lines.append)
    assert tf.train.CheckpointManager(state.checkpoint, str(directory), max_to_keep=1).latest_checkpoint is None
    assert os.listdir(directory) == []


def test_non_finite_values_and_a_wrong_step_are_skipped(state, tmp_path):
    directory = _write(state, str(tmp_path / "c"), steps=(2, 4), poison=4)
    step, _, lines = _restore(state, directory)
    assert step == 2 and "ckpt-4: 1 of " in lines[0] and "variables hold NaN/inf" in lines[0]
    directory = _write(state, str(tmp_path / "d"), steps=(2, 4), step_value=3)
    step, _, lines = _restore(state, directory)
    assert step == 2 and lines[0] == f"skipped {directory}/ckpt-4: holds step 3, not 4"


def test_no_usable_checkpoint_is_one_error_naming_every_file(state, tmp_path):
    directory = _write(state, str(tmp_path / "c"), steps=(2, 4))
    _truncate(os.path.join(directory, "ckpt-4.data-00000-of-00001"))
    os.remove(os.path.join(directory, "ckpt-2.index"))
    with pytest.raises(UserError) as e:
        _restore(state, directory)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"no usable checkpoint in {directory} (refusing to start over)")
    assert f"{directory}/ckpt-4: cannot be read" in message and f"{directory}/ckpt-2: its index file" in message
    assert _restore(state, str(tmp_path / "empty")) == (0, [], [])


def test_the_recipe_travels_inside_the_checkpoint(state, tmp_path):
    directory = _write(state, str(tmp_path / "c"), steps=(2,))
    changed = dataclasses.replace(state.config, lr=0.03, workdir=str(tmp_path / "moved"))
    with pytest.raises(UserError, match=rf"--lr=0.03 differs from 0.05 of the run in {directory}/ckpt-2; "):
        _restore(state, directory, changed)
    assert _restore(state, directory, dataclasses.replace(state.config, workdir=str(tmp_path / "moved")))[0] == 2
    # A checkpoint written without a recipe (an older psp_tf) cannot vouch for one.
    old = tf.train.Checkpoint(model=state.model, optimizer=state.optimizer, step=state.step)
    old.write(str(tmp_path / "old" / "ckpt-2"))
    with pytest.raises(UserError, match="ckpt-2: records no training recipe"):
        _restore(state, str(tmp_path / "old"))


def test_stale_temporaries_are_removed_only_by_the_run_holding_the_directory(tmp_path):
    workdir, directory = tmp_path / "run", tmp_path / "run" / "checkpoints"
    (directory / "ckpt-3_temp").mkdir(parents=True)
    (directory / "ckpt-3_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    stale = "checkpoint.tmp" + "0123456789abcdef" * 2
    (directory / stale).write_text("x")
    for name in ("ckpt-3.index", "notes.tmp", "checkpoint.tmp-mine"):  # not temporaries of a save
        (directory / name).write_text("x")
    fd = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a concurrent run: its temporaries are live
        with pytest.raises(UserError, match=f"{workdir} is in use by another training run"):
            with checkpoints.claim_directory(str(workdir), str(directory)):
                pass
        assert (directory / stale).exists() and (directory / "ckpt-3_temp").exists()
    finally:
        os.close(fd)
    with checkpoints.claim_directory(str(workdir), str(directory)):
        assert sorted(os.listdir(directory)) == ["checkpoint.tmp-mine", "ckpt-3.index", "notes.tmp"]


def test_an_unwritable_work_directory_is_one_error(tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):  # what a read-only parent gives (tests may run as root)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(UserError, match=f"^cannot create {tmp_path}/run: Permission denied$"):
        with checkpoints.claim_directory(str(tmp_path / "run"), str(tmp_path / "run" / "checkpoints")):
            pass


def _blocked(tmp_path, case):
    (tmp_path / "file").write_text("x")
    if case == "workdir is a file":
        return tmp_path / "file", f"--workdir {tmp_path}/file is a file, not a directory"
    if case == "workdir under a file":
        return tmp_path / "file" / "run", f"--workdir {tmp_path}/file/run lies under {tmp_path}/file, which is a file"
    if case == "dangling symlink":
        os.symlink(tmp_path / "nowhere", tmp_path / "link")
        return tmp_path / "link", f"--workdir {tmp_path}/link is a dangling symlink"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / case).write_text("x")
    return tmp_path / "run", f"{tmp_path}/run/{case} is a file, but the run keeps its"


@pytest.mark.parametrize("case", ["workdir is a file", "workdir under a file", "dangling symlink",
                                  "checkpoints", "tensorboard", "model"])
def test_a_blocked_work_directory_is_refused_before_anything_is_written(tmp_path, case):
    workdir, message = _blocked(tmp_path, case)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="^" + re.escape(message)):
        train(TrainConfig(workdir=str(workdir), steps=1, batch_size=1, crop_size=89),
              input_fn=make_input_fn(crop=89), evaluate_fn=False)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow  # the train.py process smoke test: after TensorFlow loads, stderr holds only our line
def test_train_py_with_a_workdir_under_a_file_is_one_error_line(tmp_path):
    (tmp_path / "file").write_text("x")
    done = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--workdir", str(tmp_path / "file" / "run"),
                           "--steps", "1"], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: --workdir {tmp_path}/file/run lies under {tmp_path}/file, which is a file, not a directory"]


@pytest.mark.slow
def test_a_non_finite_variable_stops_training_before_its_checkpoint(tmp_path):
    """BN's moving variance overflows while the loss stays finite (the issue's lr-30 run in small)."""
    workdir = str(tmp_path / "run")
    # Images ~1e20 make conv1's outputs ~1e20, whose squares (~1e40) overflow float32 (max 3.4e38) in
    # the batch variance on any CPU; the normalised activations, and so the loss, stay finite.
    with pytest.raises(TrainingDiverged) as e:
        train(TrainConfig(workdir=workdir, steps=5, batch_size=2, checkpoint_every=1, crop_size=SMALL),
              input_fn=make_input_fn(bad_step=3, crop=SMALL, bad_scale=1e18), evaluate_fn=False)
    message = str(e.value)
    assert message.startswith("1 of 209 variables hold NaN/inf (conv1_1_3x3_s2_bn/moving_variance) at step 3; "
                              f"stopped without saving (last good checkpoint: {workdir}/checkpoints/ckpt-2)"), message
    assert f"delete {workdir} or pass another --workdir" in message and "\n" not in message
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-2")
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-3.index"))


@pytest.mark.slow
def test_resume_after_damage_leftovers_and_a_lost_config(tmp_path, capsys):
    """End to end: a damaged newest checkpoint, garbage state file, SIGKILL leftovers, no train_config.json."""
    workdir = str(tmp_path / "run")
    directory = os.path.join(workdir, "checkpoints")
    config = TrainConfig(workdir=workdir, steps=4, batch_size=2, checkpoint_every=1, keep_checkpoints=3,
                         crop_size=SMALL)
    run = dict(input_fn=make_input_fn(crop=SMALL), evaluate_fn=False)
    train(config, **run)  # ckpt-2, 3, 4
    _truncate(os.path.join(directory, "ckpt-4.data-00000-of-00001"))
    _garbage(os.path.join(directory, "checkpoint"))
    os.makedirs(os.path.join(directory, "ckpt-5_temp"))
    open(os.path.join(directory, "checkpoint.tmp" + "ab" * 16), "w").close()
    os.remove(os.path.join(workdir, "train_config.json"))
    with pytest.raises(UserError, match=rf"--lr=0.02 differs from 0.05 of the run in {directory}/ckpt-3"):
        train(dataclasses.replace(config, lr=0.02), **run)
    assert not os.path.exists(os.path.join(workdir, "train_config.json"))
    capsys.readouterr()
    result = train(config, **run)
    out = capsys.readouterr().out
    assert f"skipped {directory}/ckpt-4: cannot be read" in out and f"resumed from {directory}/ckpt-3 at step 3" in out
    assert result.step == 4 and "step 4/4" in out and "step 3/4" not in out
    # ckpt-4 saved again over the damaged one; the intact older ones kept, none rotated away early.
    assert sorted(os.listdir(directory)) == ["checkpoint"] + [
        f"ckpt-{s}.{ext}" for s in (2, 3, 4) for ext in ("data-00000-of-00001", "index")]
    assert tf.train.get_checkpoint_state(directory).all_model_checkpoint_paths == [
        f"{directory}/ckpt-{s}" for s in (2, 3, 4)]


def test_a_workdir_of_another_run_is_refused_before_anything_is_made(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "train_config.json").write_text("null")
    with pytest.raises(UserError, match="train_config.json is not a psp-train record"):
        train(TrainConfig(workdir=str(workdir), steps=2, batch_size=2), evaluate_fn=False)
    assert os.listdir(workdir) == ["train_config.json"]  # no checkpoints/, no lock, no logs
