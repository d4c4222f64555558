"""The trainer in-process: the update by hand, outputs of a run, resume position, NaN stop, freeze_bn, fp16."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from psp_tf import build_pspnet
from psp_tf.load import load_model
from psp_tf.training import TrainConfig, TrainingDiverged, resolve, train
from psp_tf.training.setup import build_state
from psp_tf.training.trainer import make_train_step
from test_train_support import make_input_fn, write_pspnet_dir


def _snapshot(variables):
    return [np.array(v) for v in variables]


def test_two_steps_equal_sgd_momentum_by_hand(tmp_path):
    """lr, poly_power, momentum, head_lr_mult, L2-SP alpha/beta and aux_weight, against plain formulas."""
    keras.utils.set_random_seed(7)
    init_dir = write_pspnet_dir(tmp_path, build_pspnet("tiny", dropout=0.0))
    cfg = resolve(TrainConfig(workdir=str(tmp_path / "run"), steps=10, batch_size=2, lr=0.02, poly_power=0.5,
                              momentum=0.8, head_lr_mult=3.0, l2sp_alpha=1e-2, l2sp_beta=5e-3,
                              aux_weight=0.3, init=init_dir, fresh_classifier=True))
    strategy = tf.distribute.get_strategy()
    input_fn = make_input_fn()
    state = build_state(cfg, strategy, {"dropout": 0.0}, input_fn, evaluate_fn=False)
    model, variables = state.model, state.model.trainable_variables
    start = _snapshot(variables)
    step = make_train_step(state, strategy, cfg)
    iterator = iter(state.make_dataset(0))
    for _ in range(2):
        step(iterator, tf.constant(0.0))
    trained = _snapshot(variables)

    anchors = {l.name: np.array(l.kernel) for l in load_model(init_dir).layers
               if isinstance(l, keras.layers.Conv2D) and l.name != "conv6"}
    new_layers = {"conv6", "conv6_aux", "conv4_aux", "conv4_aux_bn"}
    for var, value in zip(variables, start):
        var.assign(value)
    velocity = [np.zeros_like(v) for v in start]
    for t, (images, labels) in enumerate(input_fn(None, 2, 0).take(2)):
        with tf.GradientTape() as tape:
            main, aux = model(images, training=True)
            valid = tf.cast(labels != 255, tf.float32)
            safe = tf.where(labels == 255, 0, labels)
            ce = [tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(safe, z) * valid)
                  / tf.reduce_sum(valid) for z in (main, aux)]
            reg = 0.0
            for layer in model.layers:
                if isinstance(layer, keras.layers.Conv2D):
                    if layer.name in anchors:
                        reg += 0.5e-2 * tf.reduce_sum((layer.kernel - anchors[layer.name]) ** 2)
                    else:
                        reg += 0.5 * 5e-3 * tf.reduce_sum(layer.kernel ** 2)
            loss = ce[0] + 0.3 * ce[1] + reg
        grads = tape.gradient(loss, variables)
        lr = 0.02 * (1 - t / 10) ** 0.5
        for i, (var, grad) in enumerate(zip(variables, grads)):
            mult = 3.0 if var.path.split("/")[0] in new_layers else 1.0
            velocity[i] = 0.8 * velocity[i] - lr * mult * np.asarray(grad)
            var.assign(np.asarray(var) + velocity[i])
    for var, got, before in zip(variables, trained, start):
        want = np.asarray(var)
        scale = np.abs(want - before).max()
        assert scale > 0, var.path
        np.testing.assert_allclose(got, want, atol=2e-3 * scale + 1e-7, err_msg=var.path)


def _events(directory):
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                values.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return values


def test_a_run_writes_config_first_then_checkpoints_tensorboard_model(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    seen = []
    base = make_input_fn()

    def input_fn(ctx, batch, start):
        seen.append(json.load(open(os.path.join(workdir, "train_config.json")))["steps"])  # before step 0
        return base(ctx, batch, start)

    evals = []

    def evaluate_fn(model, strategy):
        evals.append(model.output_shape)
        return {"miou": 0.25 * len(evals)}

    result = train(TrainConfig(workdir=workdir, steps=4, batch_size=2, checkpoint_every=2, keep_checkpoints=1,
                               eval_every=2, seed=5), input_fn=input_fn, evaluate_fn=evaluate_fn)
    assert seen == [4] and result.step == 4 and evals == [(None, 137, 137, 4)] * 2
    assert result.metrics["miou"] == 0.5
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
    loaded = load_model(os.path.join(workdir, "model"))
    images = np.random.default_rng(0).uniform(0, 255, (1, 137, 137, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), result.model(images, training=False)[0], rtol=1e-5, atol=1e-5)


def test_resume_sees_the_same_batches(tmp_path):
    """An interrupted run resumes at the checkpoint's step with the stream positioned there."""
    base = make_input_fn(crop=89)
    starts = []

    def input_fn(ctx, batch, start):
        starts.append(start)
        return base(ctx, batch, start).take(3 if len(starts) == 1 else 1 << 30)  # first try dies at step 4

    cfg = TrainConfig(workdir=str(tmp_path), steps=5, batch_size=2, checkpoint_every=3, crop_size=89)
    with pytest.raises(tf.errors.OutOfRangeError):
        train(cfg, input_fn=input_fn, evaluate_fn=False)
    assert tf.train.latest_checkpoint(os.path.join(str(tmp_path), "checkpoints")).endswith("ckpt-3")
    resumed = train(cfg, input_fn=input_fn, evaluate_fn=False)
    assert starts == [0, 3] and resumed.step == 5
    # The resumed stream's first batch is the uninterrupted stream's fourth (step index 3).
    np.testing.assert_array_equal(next(iter(base(None, 2, 3)))[0], list(base(None, 2, 0).take(4))[3][0])
    # (Bit-equal final weights after a real kill: tests/test_train_preemption.py.)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"^loss is nan and \d+ of \d+ variables hold NaN/inf \(.*\) at step 3; "
                                               r"stopped without saving \(last good checkpoint: .*ckpt-2\)"):
        train(TrainConfig(workdir=workdir, steps=6, batch_size=2, checkpoint_every=2, crop_size=89),
              input_fn=make_input_fn(bad_step=3, crop=89), evaluate_fn=False)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-2")
    assert not os.path.exists(os.path.join(workdir, "model"))
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", "ckpt-2"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    for tag, points in _events(os.path.join(workdir, "tensorboard")).items():
        assert all(np.isfinite(v) for _, v in points), tag


def test_freeze_bn_keeps_bn_fixed(tmp_path):
    result = train(TrainConfig(workdir=str(tmp_path), steps=2, batch_size=2, freeze_bn=True, crop_size=89),
                   input_fn=make_input_fn(crop=89), evaluate_fn=False)
    keras.utils.set_random_seed(0)
    fresh = build_pspnet("tiny", aux_head=True, input_size=89)
    for layer in fresh.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for got, want in zip(result.model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
    conv = result.model.get_layer("conv5_4").kernel
    assert not np.array_equal(np.asarray(conv), np.asarray(fresh.get_layer("conv5_4").kernel))


def test_fp16_trains_with_loss_scaling(tmp_path):
    result = train(TrainConfig(workdir=str(tmp_path), steps=1, batch_size=1, crop_size=89, mixed_precision="fp16"),
                   input_fn=make_input_fn(crop=89), evaluate_fn=False)
    assert np.isfinite(result.loss)
    assert result.model.get_layer("conv5_4").compute_dtype == "float16"
    assert result.model.output[0].dtype == "float32"  # logits stay float32
