"""Training pieces by hand: loss, L2-SP / weight decay, poly lr, lr multipliers, config validation."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from psp_tf import build_pspnet
from psp_tf.presets import get_preset
from psp_tf.errors import UserError
from psp_tf.training import config as config_lib
from psp_tf.training import losses, schedules
from psp_tf.training.regularizers import build_regularizer, conv_kernels


def _np_ce(logits, labels):
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != 255
    picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum(), valid.sum()


def test_cross_entropy_ignores_255_and_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, size=(2, 5, 7))
    labels[0, :2] = 255
    loss_sum, count = losses.cross_entropy_sum(logits, labels)
    want_sum, want_count = _np_ce(logits, labels)
    assert float(count) == want_count == 70 - 14
    np.testing.assert_allclose(float(loss_sum), want_sum, rtol=1e-5)


def test_main_plus_aux_loss_is_weighted_mean_over_global_count():
    rng = np.random.default_rng(1)
    main = rng.normal(size=(1, 3, 3, 3)).astype(np.float32)
    aux = rng.normal(size=(1, 3, 3, 3)).astype(np.float32)
    labels = np.array([[[0, 1, 2], [255, 255, 1], [2, 0, 255]]])
    sums = losses.pspnet_loss_sums([main, aux], labels, aux_weight=0.4)
    total, m, a = losses.combine(sums, global_count=tf.constant(12.0), aux_weight=0.4)
    want_main = _np_ce(main, labels)[0] / 12.0
    want_aux = _np_ce(aux, labels)[0] / 12.0
    np.testing.assert_allclose([float(m), float(a), float(total)],
                               [want_main, want_aux, want_main + 0.4 * want_aux], rtol=1e-5)
    # An all-ignored batch gives 0, not NaN.
    sums = losses.pspnet_loss_sums(main, np.full((1, 3, 3), 255), aux_weight=0.4)
    assert float(losses.combine(sums, sums["count"], 0.4)[0]) == 0.0


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_pspnet("tiny", aux_head=True)


def test_l2sp_by_hand(tiny):
    kernels = conv_kernels(tiny)
    names = sorted(kernels)
    # stem 3 + 4 stages x 4 + PPM 4 + conv5_4 + conv4_aux = 25 conv+BN, and the 2 classifiers
    assert len(names) == 27 and "conv6" in names and "conv6_aux" in names
    rng = np.random.default_rng(2)
    loaded = {n: np.asarray(kernels[n]) + rng.normal(size=kernels[n].shape).astype(np.float32) * 0.1
              for n in names if n.startswith(("conv1", "conv2", "conv3"))}
    alpha, beta = 1e-2, 3e-3
    reg = build_regularizer(tiny, loaded, weight_decay=5.0, alpha=alpha, beta=beta)
    want = 0.0
    for name in names:
        w = np.asarray(kernels[name], np.float64)
        want += 0.5 * alpha * ((w - loaded[name]) ** 2).sum() if name in loaded else 0.5 * beta * (w ** 2).sum()
    np.testing.assert_allclose(float(reg()), want, rtol=1e-5)
    # The gradient is alpha (w - w0) on S and beta w on N.
    s_var, n_var = kernels["conv2_1_3x3"], kernels["conv5_4"]
    with tf.GradientTape() as tape:
        value = reg()
    g_s, g_n = tape.gradient(value, [s_var, n_var])
    np.testing.assert_allclose(g_s, alpha * (np.asarray(s_var) - loaded["conv2_1_3x3"]), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(g_n, beta * np.asarray(n_var), rtol=1e-4, atol=1e-9)


def test_bn_and_biases_are_never_regularised(tiny):
    reg = build_regularizer(tiny, {}, weight_decay=1e-2, alpha=0.0)
    before = float(reg())
    touched = [tiny.get_layer("conv1_1_3x3_s2_bn").gamma, tiny.get_layer("conv1_1_3x3_s2_bn").beta,
               tiny.get_layer("conv6").bias, tiny.get_layer("conv6_aux").bias]
    saved = [np.asarray(v) for v in touched]
    try:
        for v in touched:
            v.assign(np.asarray(v) + 5.0)
        assert float(reg()) == pytest.approx(before, rel=1e-7)
    finally:
        for v, value in zip(touched, saved):
            v.assign(value)


def test_alpha_zero_is_plain_weight_decay_over_every_kernel(tiny):
    kernels = conv_kernels(tiny)
    loaded = {"conv1_1_3x3_s2": np.zeros(kernels["conv1_1_3x3_s2"].shape, np.float32)}
    reg = build_regularizer(tiny, loaded, weight_decay=1e-3, alpha=0.0, beta=None)
    want = sum(0.5 * 1e-3 * (np.asarray(k, np.float64) ** 2).sum() for k in kernels.values())
    np.testing.assert_allclose(float(reg()), want, rtol=1e-5)
    # Under L2-SP, beta defaults to --weight_decay for the new layers.
    assert build_regularizer(tiny, loaded, weight_decay=1e-3, alpha=1e-4).beta == 1e-3
    with pytest.raises(ValueError, match="nonexistent"):
        build_regularizer(tiny, {"nonexistent": np.zeros(1)}, 1e-4, 1e-4)


def test_poly_lr():
    values = [float(schedules.poly_lr(s, 0.01, 100, 0.9)) for s in (0, 50, 99, 100, 150)]
    np.testing.assert_allclose(values, [0.01, 0.01 * 0.5 ** 0.9, 0.01 * 0.01 ** 0.9, 0.0, 0.0], rtol=1e-5)
    assert float(schedules.poly_lr(30, 0.02, 100, 0.0)) == pytest.approx(0.02)


def test_gradient_multiplier_equals_lr_multiplier_for_sgd_momentum():
    # Why the trainer may scale gradients instead of keeping per-layer learning rates.
    grads = [np.array([0.3, -1.0], np.float32), np.array([2.0, 0.5], np.float32)]
    a = keras.Variable(np.ones(2, np.float32))
    b = keras.Variable(np.ones(2, np.float32))
    scaled_grad = keras.optimizers.SGD(0.01, momentum=0.9)
    scaled_lr = keras.optimizers.SGD(0.1, momentum=0.9)
    for g in grads:
        scaled_grad.apply([tf.constant(g * 10.0)], [a])
        scaled_lr.apply([tf.constant(g)], [b])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_multipliers_pick_new_layers(tiny):
    variables = tiny.trainable_variables
    mults = schedules.gradient_multipliers(variables, ["conv6", "conv5_4_bn"], 10.0)
    chosen = sorted(v.path for v, m in zip(variables, mults) if m == 10.0)
    assert chosen == ["conv5_4_bn/beta", "conv5_4_bn/gamma", "conv6/bias", "conv6/kernel"]
    assert schedules.gradient_multipliers(variables, [], 10.0) == [1.0] * len(variables)


def test_resolve_fills_the_recipe():
    config = config_lib.resolve(config_lib.TrainConfig())
    assert (config.preset, config.dataset, config.crop_size) == ("tiny", "synthetic", (137, 137))
    assert (config.steps, config.batch_size, config.lr, config.eval_split) == (2200, 8, 0.05, "val")
    config = config_lib.resolve(config_lib.TrainConfig(preset="pspnet50_ade20k", crop_size=473))
    assert (config.dataset, config.steps, config.batch_size, config.lr, config.eval_split) == (
        "ade20k", 150_000, 16, 0.01, "validation")
    assert config_lib.resolve(config_lib.TrainConfig(lr=0.2, steps=7)).lr == 0.2


BAD = [
    (dict(preset="pspnet18"), "--preset='pspnet18' must be one of pspnet101_cityscapes, pspnet101_voc2012, pspnet50_ade20k, tiny"),
    (dict(steps=0), "--steps=0"),
    (dict(batch_size=-2), "--batch_size=-2"),
    (dict(lr=0.0), "--lr=0.0"),
    (dict(poly_power=-1.0), "--poly_power"),
    (dict(momentum=1.0), "--momentum=1.0"),
    (dict(head_lr_mult=0.0), "--head_lr_mult"),
    (dict(weight_decay=-1e-4), "--weight_decay"),
    (dict(l2sp_alpha=-1.0), "--l2sp_alpha"),
    (dict(aux_weight=-0.4), "--aux_weight"),
    (dict(checkpoint_every=0), "--checkpoint_every"),
    (dict(eval_every=-1), "--eval_every"),
    (dict(mixed_precision="fp8"), "--mixed_precision"),
    (dict(strategy="horovod"), "--strategy"),
    (dict(crop_size=100), "--crop_size=100x100 gives a 13x13 feature map"),
    (dict(crop_size=(137, 145)), "--crop_size=137x145"),
    (dict(l2sp_alpha=1e-4), "--l2sp_alpha > 0 pulls weights towards the ones loaded by --init"),
    (dict(l2sp_beta=1e-3), "--l2sp_beta is the L2-SP decay of new layers and needs --l2sp_alpha > 0"),
    (dict(sync_bn=True, freeze_bn=True), "--sync_bn and --freeze_bn contradict"),
    (dict(tpu="node-1"), "--tpu='node-1' needs --strategy tpu"),
    (dict(strategy="tpu"), "--strategy tpu needs --tpu NAME"),
    (dict(strategy="tpu", tpu="n", mixed_precision="fp16", tfrecords="gs://b/t-*"), "fp16 is not supported on TPU"),
    (dict(strategy="tpu", tpu="n"), "--strategy tpu reads its training data from --tfrecords"),
    (dict(tfrecords="gs://b/ade", data_dir="/data/ade"), "--tfrecords and --data_dir contradict"),
    (dict(tfrecords="/data/tfr", dataset_options=("num_classes=5",)),
     "--dataset_option num_classes=5 has no effect with --tfrecords"),
    (dict(fresh_classifier=True), "--fresh_classifier only applies with --init"),
    (dict(eval_max_images=0), "--eval_max_images=0"),
    (dict(steps_per_execution=0), "--steps_per_execution=0"),
    (dict(eval_split="none", eval_every=5), "--eval_every sets the evaluation, but --eval_split none"),
    (dict(eval_split="none", eval_max_images=3), "--eval_max_images sets the evaluation, but --eval_split none"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_bad_and_contradicting_settings_are_one_line_errors(overrides, message):
    with pytest.raises(UserError) as info:
        config_lib.resolve(config_lib.TrainConfig(**overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_resume_with_other_recipe_is_refused_but_paths_may_move(tmp_path):
    config = config_lib.resolve(config_lib.TrainConfig(workdir=str(tmp_path), steps=10))
    config_lib.save(config, str(tmp_path))
    moved = dataclasses.replace(config, data_dir="/elsewhere", eval_every=5, checkpoint_every=3)
    config_lib.save(moved, str(tmp_path))
    with pytest.raises(UserError, match=r"--lr=0.02 differs from 0.05 .*use the same flags to resume"):
        config_lib.save(dataclasses.replace(config, lr=0.02), str(tmp_path))


def test_resume_with_another_resolved_network_names_what_differs(tmp_path):
    config = config_lib.resolve(config_lib.TrainConfig(workdir=str(tmp_path), steps=10))
    network = get_preset("tiny", crop_size=(137, 137))
    config_lib.save(dataclasses.replace(config, network=network, augment={"mean": [1, 2, 3]}), str(tmp_path))
    other = dataclasses.replace(config, network=dataclasses.replace(network, num_classes=5, class_names=tuple("abcde"),
                                                                    palette=((0, 0, 0),) * 5), augment={"mean": [1, 2, 3]})
    with pytest.raises(UserError, match=r"^the resolved network config differs from the run in .* in class_names, "
                                        r"num_classes, palette; use the same flags and data"):
        config_lib.save(other, str(tmp_path))
    # A train_config.json of an older psp_tf has no resolved network: a resume there is not refused for it.
    stored = config_lib.load(os.path.join(str(tmp_path), "train_config.json"))
    del stored["network"], stored["augment"]
    config_lib.check_resume_compatible(stored, other, "train_config.json")


def test_a_tfrecords_run_recorded_with_reader_options_resumes_without_them(tmp_path):
    # psp_tf before 2026-12-04 took --dataset_option beside --tfrecords (and never read it); now it is
    # refused, so the resume must not ask for it.
    config = config_lib.resolve(config_lib.TrainConfig(workdir=str(tmp_path / "run"), steps=10,
                                                       tfrecords=str(tmp_path / "t")))
    older = {**json.loads(json.dumps(config.to_dict())), "dataset_options": ["seed=3"]}
    config_lib.check_resume_compatible(older, config, "train_config.json")
    with pytest.raises(UserError, match=r"--dataset_option=\[\] differs"):  # without --tfrecords they were read
        plain = dataclasses.replace(config, tfrecords=None)
        config_lib.check_resume_compatible({**older, "tfrecords": None}, plain, "train_config.json")


@pytest.mark.parametrize("content", ["null", "1", '"seed"', "[]", "{}", '{"preset": "tiny", "network": 5}',
                                     '{"preset": 3}'])
def test_a_train_config_that_is_no_record_is_refused_and_kept(tmp_path, content):
    config = config_lib.resolve(config_lib.TrainConfig(workdir=str(tmp_path), steps=10))
    (tmp_path / "train_config.json").write_text(content)
    with pytest.raises(UserError, match=f"^{tmp_path}/train_config.json is not a psp-train record .*; move it "
                                        f"away or use another --workdir$"):
        config_lib.save(config, str(tmp_path))
    assert (tmp_path / "train_config.json").read_text() == content


def test_defaults_resolve_a_workdir_per_run_and_the_folder_eval_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.resolve(config_lib.TrainConfig()).workdir == str(tmp_path / "runs" / "tiny_synthetic")
    ade = config_lib.resolve(config_lib.TrainConfig(preset="pspnet50_ade20k", data_dir=str(tmp_path / "ade")))
    assert ade.workdir == str(tmp_path / "runs" / "pspnet50_ade20k_ade20k") and ade.eval_split == "validation"
    folder = tmp_path / "folder"
    os.makedirs(folder / "images" / "train")
    resolved = config_lib.resolve(config_lib.TrainConfig(dataset="folder", data_dir=str(folder)))
    assert resolved.eval_split == "none" and not resolved.evaluates
    os.makedirs(folder / "images" / "val")
    assert config_lib.resolve(config_lib.TrainConfig(dataset="folder", data_dir=str(folder))).eval_split == "val"
    assert config_lib.resolve(config_lib.TrainConfig(crop_size=89)).crop_size == (89, 89)


def test_a_call_runs_steps_per_execution_but_ends_where_the_host_acts():
    from psp_tf.training.trainer import _steps_in_call

    config = config_lib.resolve(config_lib.TrainConfig(steps=23, checkpoint_every=10, eval_every=4,
                                                       steps_per_execution=6))
    step, calls = 0, []
    while step < config.steps:
        calls.append(_steps_in_call(config, step))
        step += calls[-1]
    # Ends at every checkpoint (10, 20), evaluation (4, 8, ...), multiple of 6 and the last step.
    ends = [sum(calls[:i + 1]) for i in range(len(calls))]
    assert ends == [4, 6, 8, 10, 12, 16, 18, 20, 23]
    assert max(calls) <= 6


def test_worker_rank_counts_a_chief_first():
    from types import SimpleNamespace

    from psp_tf.distribute import worker_index

    def strategy(cluster, task_type, task_id):
        spec = SimpleNamespace(as_dict=lambda: cluster)
        return SimpleNamespace(cluster_resolver=SimpleNamespace(cluster_spec=lambda: spec, task_type=task_type,
                                                                task_id=task_id))

    workers = {"worker": ["a:1", "b:1"]}
    assert [worker_index(strategy(workers, "worker", i)) for i in (0, 1)] == [0, 1]
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert worker_index(strategy(with_chief, "chief", 0)) == 0
    assert [worker_index(strategy(with_chief, "worker", i)) for i in (0, 1)] == [1, 2]
    assert worker_index(SimpleNamespace()) == 0
