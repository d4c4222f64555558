"""The trainer in-process: the update by hand, outputs of a run, resume position, NaN stop, freeze_bn, fp16."""

import glob
import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from psp_tf import build_pspnet
from psp_tf.model_dir import load_model
from psp_tf.training import TrainConfig, resolve
from psp_tf.training.trainer import Preempted, TrainingDiverged, train
from psp_tf.training.inputs import resolve_run
from psp_tf.training.state import build_state
from psp_tf.training.trainer import make_train_step
from support.bounds import gamma
from support.events import read_images
from support.training import make_input_fn, write_pspnet_dir

pytestmark = pytest.mark.heavy(70)


# The smallest crop the tiny preset's bins (1, 2, 3, 6) accept (a 6x6 feature map), for the tests whose
# claim does not depend on the size (not the update by hand: its tolerance argument counts pixels).
SMALL = 41


def _snapshot(variables):
    return [np.array(v) for v in variables]


# L2-SP pulls towards the --init weights, which are the start: its gradient alpha (w - w0) is 0 at step 1
# and lr * alpha of the first update at step 2, so alpha must be large for two steps to see it (with
# 1e-2 a missing L2-SP term moved no tensor by more than 1e-4 of its update; with 5 it moves one by 5%).
RECIPE = dict(lr=0.02, poly_power=0.5, momentum=0.8, head_lr_mult=3.0, l2sp_alpha=5.0, l2sp_beta=5e-3,
              aux_weight=0.3)
NEW_LAYERS = {"conv6", "conv6_aux", "conv4_aux", "conv4_aux_bn"}  # fresh classifier and aux head


def _float64_twin(model):
    """The same network, every layer computing in float64, with the model's weights."""
    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    inputs = keras.Input(model.input.shape[1:], dtype="float64")
    twin = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    twin.set_weights([w.astype(np.float64) for w in model.get_weights()])
    return twin


def _sgd_by_hand(model, start, anchors, batches, steps, recipe):
    """`len(batches)` steps of the recipe's plain formulas on `model` from `start`; returns the weights."""
    variables = model.trainable_variables
    for var, value in zip(variables, start):
        var.assign(value.astype(var.dtype))
    velocity = [np.zeros(v.shape) for v in start]
    for t, (images, labels) in enumerate(batches):
        with tf.GradientTape() as tape:
            main, aux = model(tf.cast(images, model.compute_dtype), training=True)
            valid = tf.cast(labels != 255, main.dtype)
            safe = tf.where(labels == 255, 0, labels)
            ce = [tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(safe, z) * valid)
                  / tf.reduce_sum(valid) for z in (main, aux)]
            reg = 0.0
            for layer in model.layers:
                if isinstance(layer, keras.layers.Conv2D):
                    if layer.name in anchors:
                        reg += 0.5 * recipe["l2sp_alpha"] * tf.reduce_sum((layer.kernel - anchors[layer.name]) ** 2)
                    else:
                        reg += 0.5 * recipe["l2sp_beta"] * tf.reduce_sum(layer.kernel ** 2)
            loss = ce[0] + recipe["aux_weight"] * ce[1] + reg
        grads = tape.gradient(loss, variables)
        lr = recipe["lr"] * (1 - t / steps) ** recipe["poly_power"]
        for i, (var, grad) in enumerate(zip(variables, grads)):
            mult = recipe["head_lr_mult"] if var.path.split("/")[0] in NEW_LAYERS else 1.0
            velocity[i] = recipe["momentum"] * velocity[i] - lr * mult * np.asarray(grad, np.float64)
            var.assign(np.asarray(var, np.float64) + velocity[i])
    return [np.asarray(v, np.float64) for v in variables]


def _trained_and_reference(tmp_path):
    """The trainer's 2 steps: (trained weights, start weights, variable paths, (float64 twin of the
    model, L2-SP anchors, the 2 batches, cfg.steps)) for _sgd_by_hand."""
    keras.utils.set_random_seed(7)
    os.makedirs(tmp_path / "init")  # apart from the work directory: an output never lies inside an input
    init_dir = write_pspnet_dir(tmp_path / "init", build_pspnet("tiny", dropout=0.0))
    cfg = resolve(TrainConfig(workdir=str(tmp_path / "run"), steps=10, batch_size=2, init=init_dir,
                              fresh_classifier=True, **RECIPE))
    strategy = tf.distribute.get_strategy()
    input_fn = make_input_fn()
    cfg = resolve_run(cfg, None, {"dropout": 0.0})
    state = build_state(cfg, strategy, input_fn)
    variables = state.model.trainable_variables
    start = _snapshot(variables)
    train_steps = make_train_step(state, strategy, cfg)
    iterator = iter(state.make_dataset(0))
    train_steps(iterator, tf.constant(0.0), tf.constant(2))  # both steps in one call (a while_loop)
    assert int(state.step.numpy()) == 2
    trained = _snapshot(variables)
    anchors = {l.name: np.array(l.kernel, np.float64) for l in load_model(init_dir).layers
               if isinstance(l, keras.layers.Conv2D) and l.name != "conv6"}
    twin = _float64_twin(state.model)
    batches = list(input_fn(None, 2, 0).take(2))
    return trained, start, [v.path for v in variables], (twin, anchors, batches, cfg.steps)


@pytest.mark.slow
def test_two_steps_equal_sgd_momentum_by_hand(tmp_path):
    """lr, poly_power, momentum, head_lr_mult, L2-SP alpha/beta and aux_weight, against plain formulas
    evaluated in float64 (the maths), so that only the trainer's own float32 rounding is tolerated."""
    trained, start, paths, (twin, anchors, batches, steps) = _trained_and_reference(tmp_path)
    want = _sgd_by_hand(twin, start, anchors, batches, steps, RECIPE)
    # Tolerance: every weight's gradient is a sum over the N = B*H*W per-pixel loss terms (each path
    # from a weight to the loss goes through that sum), so its float32 error is within gamma_N of the
    # size of the update (no cancellation between pixels assumed), whatever order oneDNN or Eigen sum
    # in. Measured in the L2 norm over each tensor: an activation within rounding of a ReLU kink may lie
    # on the other side in float32 than in float64 and move one channel's gradient by up to ~1/(pixels
    # at that layer) (seen on Zen 4: one column of conv5_1_1x1_proj/kernel off by 1% of the largest
    # update); such a flip hardly moves the tensor's norm, a wrong recipe moves whole tensors.
    bound = gamma(int(np.prod(batches[0][1].shape)))
    for path, got, expected, before in zip(paths, trained, want, start):
        moved = np.linalg.norm(expected - before)
        assert moved > 0, path
        off = np.linalg.norm(got - expected)
        assert off <= bound * moved, (path, off / moved, bound)


def _events(directory):
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "images":
                    continue
                values.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return values


@pytest.mark.slow
def test_a_run_writes_config_first_then_checkpoints_tensorboard_model(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    seen = []
    base = make_input_fn(crop=SMALL)

    def input_fn(ctx, batch, start):
        seen.append(json.load(open(os.path.join(workdir, "train_config.json")))["steps"])  # before step 0
        return base(ctx, batch, start)

    evals = []
    panel = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)

    def evaluate_fn(model, strategy):
        evals.append(model.output_shape)
        return {"miou": 0.25 * len(evals), "images": [("eval_images/00_x", panel + len(evals))]}

    result = train(TrainConfig(workdir=workdir, steps=4, batch_size=2, checkpoint_every=2, keep_checkpoints=1,
                               eval_every=2, seed=5, crop_size=SMALL), input_fn=input_fn, evaluate_fn=evaluate_fn)
    assert seen == [4] and result.step == 4 and evals == [(None, SMALL, SMALL, 4)] * 2
    assert result.metrics == {"miou": 0.5}  # the images go to TensorBoard only
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    out = capsys.readouterr().out
    for text in ("step 4/4", "loss ", "lr ", "img/s", "ETA", "evaluation at step 2: mIoU 0.2500"):
        assert text in out
    scalars = _events(os.path.join(workdir, "tensorboard"))
    assert [s for s, _ in scalars["eval/miou"]] == [2, 4]
    lr_at_4 = dict(scalars["train/lr"])[4]
    assert lr_at_4 == pytest.approx(0.05 * (1 - 3 / 4) ** 0.9, rel=1e-5)  # step 4 used the lr of step index 3
    assert dict(scalars["train/loss"])[4] == pytest.approx(result.loss, rel=1e-6)
    images = read_images(os.path.join(workdir, "tensorboard"))["eval_images/00_x"]
    assert [step for step, _ in images] == [2, 4]
    np.testing.assert_array_equal(images[1][1], panel + 2)
    loaded = load_model(os.path.join(workdir, "model"))
    images = np.random.default_rng(0).uniform(0, 255, (1, SMALL, SMALL, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), result.model(images, training=False)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_resume_sees_the_same_batches(tmp_path):
    """An interrupted run resumes at the checkpoint's step with the stream positioned there."""
    base = make_input_fn(crop=SMALL)
    starts = []

    def input_fn(ctx, batch, start):
        starts.append(start)
        return base(ctx, batch, start).take(2 if len(starts) == 1 else 1 << 30)  # first try dies at step 3

    cfg = TrainConfig(workdir=str(tmp_path), steps=3, batch_size=2, checkpoint_every=2, crop_size=SMALL)
    with pytest.raises(tf.errors.OutOfRangeError):
        train(cfg, input_fn=input_fn, evaluate_fn=False)
    assert tf.train.latest_checkpoint(os.path.join(str(tmp_path), "checkpoints")).endswith("ckpt-2")
    resumed = train(cfg, input_fn=input_fn, evaluate_fn=False)
    assert starts == [0, 2] and resumed.step == 3
    # The resumed stream's first batch is the uninterrupted stream's third (step index 2).
    np.testing.assert_array_equal(next(iter(base(None, 2, 2)))[0], list(base(None, 2, 0).take(3))[2][0])
    # (Bit-equal final weights after a real kill: tests/training/test_preemption.py.)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"^loss is nan and \d+ of \d+ variables hold NaN/inf \(.*\) at step 3; "
                                               r"stopped without saving \(last good checkpoint: .*ckpt-2\)"):
        train(TrainConfig(workdir=workdir, steps=6, batch_size=2, checkpoint_every=2, crop_size=SMALL),
              input_fn=make_input_fn(bad_step=3, crop=SMALL), evaluate_fn=False)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-2")
    assert not os.path.exists(os.path.join(workdir, "model"))
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", "ckpt-2"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    for tag, points in _events(os.path.join(workdir, "tensorboard")).items():
        assert all(np.isfinite(v) for _, v in points), tag


def _ctrl_c_at(monkeypatch, step, presses):
    """Makes the progress line of `step` press Ctrl-C `presses` times (SIGINT to this process)."""
    from psp_tf.training import trainer

    class Pressing(trainer.Progress):
        def update(self, done, *args, **kwargs):
            super().update(done, *args, **kwargs)
            if done == step:
                for _ in range(presses):
                    os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trainer, "Progress", Pressing)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path, monkeypatch):
    config = TrainConfig(workdir=str(tmp_path / "run"), steps=8, batch_size=2, checkpoint_every=100,
                         steps_per_execution=1, crop_size=SMALL)
    handler = signal.getsignal(signal.SIGINT)
    _ctrl_c_at(monkeypatch, 2, presses=1)
    with pytest.raises(Preempted, match=r"^SIGINT received: saved a checkpoint at step 3; rerun the same "
                                        r"command to resume$") as stopped:
        train(config, input_fn=make_input_fn(crop=SMALL), evaluate_fn=False)
    assert stopped.value.exit_code == 130 and stopped.value.step == 3
    assert tf.train.latest_checkpoint(os.path.join(config.workdir, "checkpoints")).endswith("ckpt-3")
    assert signal.getsignal(signal.SIGINT) is handler  # put back


def test_a_second_ctrl_c_interrupts_at_once_and_an_ignored_one_stays_ignored():
    from psp_tf.training import trainer

    handler = signal.getsignal(signal.SIGINT)
    stop = trainer._StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.flag and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # the ordinary handler is back after the first
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is handler
    # A SIGINT this process ignores (a job started with `&` by a shell) stays ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = trainer._StopFlag()
        os.kill(os.getpid(), signal.SIGINT)
        assert not stop.flag and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        stop.restore()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, handler)


@pytest.mark.slow
def test_freeze_bn_keeps_bn_fixed(tmp_path):
    result = train(TrainConfig(workdir=str(tmp_path), steps=2, batch_size=2, freeze_bn=True, crop_size=SMALL),
                   input_fn=make_input_fn(crop=SMALL), evaluate_fn=False)
    keras.utils.set_random_seed(0)
    fresh = build_pspnet("tiny", aux_head=True, input_size=SMALL)
    for layer in fresh.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for got, want in zip(result.model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
    conv = result.model.get_layer("conv5_4").kernel
    assert not np.array_equal(np.asarray(conv), np.asarray(fresh.get_layer("conv5_4").kernel))


@pytest.mark.slow
def test_fp16_trains_with_loss_scaling(tmp_path):
    result = train(TrainConfig(workdir=str(tmp_path), steps=1, batch_size=1, crop_size=SMALL, mixed_precision="fp16"),
                   input_fn=make_input_fn(crop=SMALL), evaluate_fn=False)
    assert np.isfinite(result.loss)
    assert result.model.get_layer("conv5_4").compute_dtype == "float16"
    assert result.model.output[0].dtype == "float32"  # logits stay float32
