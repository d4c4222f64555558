"""Augmentation invariants and the training pipeline's determinism, resumption and sharding."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import psp_tf.data as D
from psp_tf.data import augment as A
from psp_tf.data import pipeline as P
from psp_tf.errors import UserError
from psp_tf.presets import CAFFE_MEAN_RGB

from support import datasets as fx

PALETTE = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)], np.float32)
MEAN = np.array(CAFFE_MEAN_RGB, np.float32)
PAPER = A.AugmentConfig(mean=CAFFE_MEAN_RGB)  # the paper's augmentation, padding in the Caffe mean


def _blocks(h=90, w=120):
    """A label of large rectangles of classes 0..3 and the image painted with their colours."""
    label = np.zeros((h, w), np.uint8)
    label[: h // 2, w // 3:] = 1
    label[h // 2:, : w // 2] = 2
    label[h // 3: 2 * h // 3, w // 4: 3 * w // 4] = 3
    return PALETTE[label].astype(np.uint8), label


def _uniform_neighbourhood(label, r=2):
    """bool mask of pixels whose (2r+1)^2 neighbourhood holds one value."""
    pad = np.pad(label, r, mode="edge").astype(int)
    same = np.ones(label.shape, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= pad[dy: dy + label.shape[0], dx: dx + label.shape[1]] == label
    return same


@pytest.mark.parametrize("seed", range(6))
def test_label_coloured_image_stays_aligned(seed):
    image, label = _blocks()
    config = A.AugmentConfig(mean=MEAN, blur_prob=0.0)
    out_image, out_label = A.augment_example(tf.constant(image), tf.constant(label), (64, 64),
                                             tf.constant([seed, 7], tf.int64), config)
    out_image, out_label = out_image.numpy(), out_label.numpy()
    assert out_image.shape == (64, 64, 3) and out_label.dtype == np.uint8
    assert set(np.unique(out_label)) <= {0, 1, 2, 3, 255}
    interior = _uniform_neighbourhood(out_label)
    inside = interior & (out_label != 255)
    fill = interior & (out_label == 255)
    assert inside.sum() > 500
    np.testing.assert_allclose(out_image[inside], PALETTE[out_label[inside]], atol=1e-3)
    np.testing.assert_allclose(out_image[fill], np.broadcast_to(MEAN, out_image[fill].shape), atol=1e-3)


def test_no_augmentation_is_a_centred_crop_and_pad():
    image, label = _blocks(40, 50)
    none = A.AugmentConfig.none(MEAN)
    same = A.augment_example(image, label, (40, 50), tf.constant([0, 0], tf.int64), none)
    np.testing.assert_array_equal(same[0].numpy(), image.astype(np.float32))
    np.testing.assert_array_equal(same[1].numpy(), label)
    img, lab = [t.numpy() for t in A.augment_example(image, label, (44, 30), tf.constant([0, 0], tf.int64), none)]
    # Height padded by 2 rows each side (mean / 255); width centre-cropped from column 10.
    np.testing.assert_array_equal(lab[2:42], label[:, 10:40])
    np.testing.assert_array_equal(img[2:42], image[:, 10:40].astype(np.float32))
    assert (lab[:2] == 255).all() and (lab[42:] == 255).all()
    np.testing.assert_allclose(img[:2].reshape(-1, 3), np.broadcast_to(MEAN, (60, 3)), atol=1e-4)


def test_scale_two_repeats_each_label_pixel_twice():
    image, label = _blocks(40, 50)
    config = A.AugmentConfig.none(MEAN, scale_range=(2.0, 2.0))
    _, lab = A.augment_example(image, label, (80, 100), tf.constant([0, 0], tf.int64), config)
    np.testing.assert_array_equal(lab.numpy(), np.repeat(np.repeat(label, 2, 0), 2, 1))


def test_mirror_and_rotation_directions():
    image, label = _blocks(40, 50)
    mirrored = [A.augment_example(image, label, (40, 50), tf.constant([s, 1], tf.int64),
                                  A.AugmentConfig.none(MEAN, mirror=True))[1].numpy() for s in range(8)]
    flips = [np.array_equal(m, label[:, ::-1]) for m in mirrored]
    assert any(flips) and all(f or np.array_equal(m, label) for f, m in zip(flips, mirrored))
    rotated = A.augment_example(image, label, (40, 50), tf.constant([3, 1], tf.int64),
                                A.AugmentConfig.none(MEAN, max_rotation=10.0))[1].numpy()
    assert (rotated == 255).any() and (rotated == label).mean() > 0.8  # corners turn out, content stays


def test_blur_matches_opencv():
    image = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(A.gaussian_blur(tf.constant(image)).numpy(),
                               cv2.GaussianBlur(image, (5, 5), 0), atol=1e-3)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Seven labelled images of different sizes (55x70 .. 73x88, classes 0..3) in the folder layout.

    The stream, sharding and augmentation under test are the base reader's for every dataset; the
    synthetic dataset's renderer (160-240 pixel sides) made each pipeline cost ~2.5 s to build and
    start, files of this size cost about half. Its own determinism is tests/data/test_datasets.py's.
    """
    root = str(tmp_path_factory.mktemp("pipeline"))
    for k in range(7):
        image, label = _blocks(55 + 3 * k, 70 + 3 * k)
        image = np.clip(image.astype(int) + fx.image(k, *label.shape) // 8, 0, 255).astype(np.uint8)
        fx.write_image(os.path.join(root, "images", "train", f"img{k}.png"), image)
        fx.write_grey(os.path.join(root, "labels", "train", f"img{k}.png"), label)
    return D.open_dataset("folder", root, "train", num_classes=4)


def _batches(ds, n):
    return [(i.numpy(), l.numpy()) for i, l in ds.take(n)]


@pytest.mark.slow  # a pipeline built and run
def test_pipeline_static_shapes_and_values(labelled):
    ds = D.train_pipeline(labelled, 65, 3, augment=PAPER, seed=0, label_dtype=tf.uint8)
    assert ds.element_spec[0].shape == (3, 65, 65, 3) and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape == (3, 65, 65) and ds.element_spec[1].dtype == tf.uint8
    image, label = _batches(ds, 1)[0]
    assert 0 <= image.min() and image.max() <= 255 and set(np.unique(label)) <= {0, 1, 2, 3, 255}


def test_pipeline_has_no_python_ops(labelled):
    text = str(D.train_pipeline(labelled, 33, 2, augment=PAPER, seed=0)._as_serialized_graph().numpy())
    assert "ImageProjectiveTransformV3" in text and "Stateless" in text
    assert "PyFunc" not in text and "EagerPyFunc" not in text


@pytest.mark.slow  # four pipelines built and run (each traces the decoding and the augmentation)
def test_pipeline_deterministic_and_resumable(labelled):
    run = _batches(D.train_pipeline(labelled, 49, 2, augment=PAPER, seed=3, num_parallel_calls=4), 6)
    again = _batches(D.train_pipeline(labelled, 49, 2, augment=PAPER, seed=3), 6)
    resumed = _batches(D.train_pipeline(labelled, 49, 2, augment=PAPER, seed=3, start_step=4), 2)
    other = _batches(D.train_pipeline(labelled, 49, 2, augment=PAPER, seed=4), 1)
    for a, b in zip(run, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for a, b in zip(run[4:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(run[0][0], other[0][0])


def test_every_epoch_is_a_fresh_permutation():
    n = 7
    indices = [int(P.example_index(tf.constant(p, tf.int64), n, seed=1)) for p in range(3 * n)]
    epochs = [indices[e * n: (e + 1) * n] for e in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert [int(P.example_index(tf.constant(p, tf.int64), n, 1, shuffle=False)) for p in range(9)] == \
        [0, 1, 2, 3, 4, 5, 6, 0, 1]


@pytest.fixture(scope="module")
def whole_batches(labelled):
    """global batch -> the first two batches of the unsharded pipeline, built once per module ((2, 2)
    and (1, 2) below share the global batch 4)."""
    made = {}

    def get(global_batch):
        if global_batch not in made:
            made[global_batch] = _batches(D.train_pipeline(labelled, 33, global_batch, augment=PAPER, seed=2,
                                                           start_step=1), 2)
        return made[global_batch]

    return get


@pytest.mark.slow  # 3-5 s quiet each: two or three pipelines built and run
@pytest.mark.parametrize("pipelines,replicas", [(2, 2), (1, 2), (2, 4)])
def test_sharded_pipelines_make_up_the_global_batch(labelled, whole_batches, pipelines, replicas):
    global_batch = 2 * replicas
    whole = whole_batches(global_batch)
    per_pipeline = []
    for i in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, i, replicas)
        ds = D.train_pipeline(labelled, 33, global_batch, augment=PAPER, seed=2, start_step=1, input_context=ctx)
        assert ds.element_spec[0].shape[0] == 2
        per_pipeline.append(_batches(ds, 2 * replicas // pipelines))
    k = replicas // pipelines
    for step in range(2):
        parts = [per_pipeline[i][step * k + j] for i in range(pipelines) for j in range(k)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[step][0])
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[step][1])


def test_bad_batch_layouts_are_user_errors(labelled):
    with pytest.raises(UserError, match="batch size 3 does not divide over 2 replicas"):
        D.train_pipeline(labelled, 33, 3, augment=PAPER, seed=0, input_context=tf.distribute.InputContext(1, 0, 2))
    unlabelled = D.open_dataset("synthetic", None, "val", num_images=2)
    unlabelled.has_labels = False
    with pytest.raises(UserError, match="synthetic val has no ground truth"):
        D.train_pipeline(unlabelled, 33, 1, augment=PAPER, seed=0)


def test_eval_source_sharding_and_order(labelled):
    names = [n.numpy().decode() for _, _, n in D.eval_source(labelled)]
    assert names == labelled.names
    shard = [n.numpy().decode() for _, _, n in D.eval_source(labelled, tf.distribute.InputContext(2, 1, 2))]
    assert shard == labelled.names[1::2]
