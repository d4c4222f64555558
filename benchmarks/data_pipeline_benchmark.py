"""Training-pipeline throughput at crop 473 with all augmentations, against a single-process OpenCV loop.

Writes its own ~512x683 JPEG + PNG pairs (folder layout), then measures images/s of:
  1. psp_tf.data.train_pipeline (one composed ImageProjectiveTransformV3 per tensor, parallel map);
  2. the usual OpenCV sequence in one process: decode, resize the whole image, rotate, blur, flip,
     pad, crop (the semseg reference transforms);
  3. OpenCV with the same single composed warpAffine (sampling only the crop).
With --model_step it also times one PSPNet50 training step (forward + backward, batch 1, 473x473)
to say whether input can be the bottleneck.

Run: python benchmarks/data_pipeline_benchmark.py [--images 400] [--model_step]
"""

import argparse
import math
import os
import tempfile
import time

import cv2
import numpy as np
import tensorflow as tf

import psp_tf.data as D
from psp_tf.presets import CAFFE_MEAN_RGB

CROP = 473
MEAN = np.array(CAFFE_MEAN_RGB, np.float32)


def write_pairs(root, count, seed=0):
    """Writes `count` 512x683 JPEG images (smooth colour fields with shapes) and PNG label maps."""
    rng = np.random.default_rng(seed)
    for split_dir in ("images/train", "labels/train"):
        os.makedirs(os.path.join(root, split_dir), exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 256, (8, 11, 3), dtype=np.uint8)
        image = cv2.resize(small, (683, 512), interpolation=cv2.INTER_CUBIC)
        label = np.zeros((512, 683), np.uint8)
        for k in range(6):
            centre = tuple(int(c) for c in rng.integers(0, 512, 2))
            cv2.circle(image, centre, int(rng.integers(20, 120)), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
            cv2.circle(label, centre, 60, int(rng.integers(1, 20)), -1)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "images/train", f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(os.path.join(root, "labels/train", f"{i:05d}.png"), label)


def time_tf(dataset, count, batch=8):
    """Images/s of the tf.data training pipeline (after one warm-up batch)."""
    stream = iter(D.train_pipeline(dataset, CROP, batch, seed=0, augment=D.AugmentConfig(mean=CAFFE_MEAN_RGB)))
    next(stream)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count // batch):
        next(stream)
    n = (count // batch) * batch
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def _params(rng):
    scale = rng.uniform(0.5, 2.0)
    return scale, rng.uniform(-10, 10), rng.random() < 0.5, rng.random() < 0.5


def opencv_sequence(image, label, rng):
    """The usual step-by-step OpenCV augmentation (semseg transforms order)."""
    scale, angle, blur, flip = _params(rng)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = label.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=MEAN.tolist())
    label = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=255)
    if blur:
        image = cv2.GaussianBlur(image, (5, 5), 0)
    if flip:
        image, label = image[:, ::-1], label[:, ::-1]
    ph, pw = max(CROP - h, 0), max(CROP - w, 0)
    if ph or pw:
        image = cv2.copyMakeBorder(image, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2,
                                   cv2.BORDER_CONSTANT, value=MEAN.tolist())
        label = cv2.copyMakeBorder(label, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2,
                                   cv2.BORDER_CONSTANT, value=255)
    y, x = rng.integers(0, image.shape[0] - CROP + 1), rng.integers(0, image.shape[1] - CROP + 1)
    return image[y: y + CROP, x: x + CROP].astype(np.float32), label[y: y + CROP, x: x + CROP]


def opencv_composed(image, label, rng):
    """One warpAffine per tensor straight into the crop (the same design as the TF pipeline)."""
    scale, angle, blur, flip = _params(rng)
    h, w = image.shape[:2]
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    if flip:
        rot = np.diag([-1, 1]) @ rot
    sh, sw = h * scale, w * scale
    oy, ox = rng.integers(0, max(sh - CROP, 0) + 1), rng.integers(0, max(sw - CROP, 0) + 1)
    offset = np.array([sw / 2 - ox, sh / 2 - oy]) - rot @ np.array([w / 2, h / 2])
    matrix = np.hstack([rot, offset[:, None]])
    image = cv2.warpAffine(image, matrix, (CROP, CROP), flags=cv2.INTER_LINEAR, borderValue=MEAN.tolist())
    label = cv2.warpAffine(label, matrix, (CROP, CROP), flags=cv2.INTER_NEAREST, borderValue=255)
    if blur:
        image = cv2.GaussianBlur(image, (5, 5), 0)
    return image.astype(np.float32), label


def time_opencv(dataset, count, fn):
    """Images/s of a single-process loop: cv2 decode + `fn` augmentation."""
    rng = np.random.default_rng(0)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        image_path, label_path = dataset.examples[i % len(dataset)]
        image = cv2.imread(image_path)[..., ::-1]
        label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
        fn(image, label, rng)
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


def time_model_step():
    """Seconds of one PSPNet50 (ADE20K preset) training step at 473x473, batch 1 (after warm-up)."""
    import keras
    import psp_tf

    model = psp_tf.build_pspnet("pspnet50_ade20k", aux_head=True)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    image = tf.random.uniform([1, CROP, CROP, 3], 0, 255)
    label = tf.random.uniform([1, CROP, CROP], 0, 150, tf.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            main, aux = model(image, training=True)
            loss = loss_fn(label, main) + 0.4 * loss_fn(label, aux)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    step()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="images timed per implementation")
    parser.add_argument("--files", type=int, default=64, help="distinct JPEG+PNG pairs written")
    parser.add_argument("--model_step", action="store_true", help="also time a PSPNet50 training step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_pairs(root, args.files)
        dataset = D.open_dataset("folder", root, "train", num_classes=20)
        results = {
            "tf.data train_pipeline (composed transform, parallel map)": time_tf(dataset, args.images),
            "OpenCV loop, usual sequence (resize, rotate, blur, flip, pad, crop)":
                time_opencv(dataset, args.images, opencv_sequence),
            "OpenCV loop, one composed warpAffine per tensor": time_opencv(dataset, args.images, opencv_composed),
        }
    print(f"crop {CROP}, all augmentations, 512x683 JPEG+PNG, {os.cpu_count()} CPUs, "
          f"{args.images} images each")
    # CPU time per image (all threads) is the cost that does not depend on what else the machine runs.
    for name, (rate, cpu) in results.items():
        print(f"  {rate:8.1f} img/s  {1000 * cpu:6.1f} CPU-ms/img  {name}")
    if args.model_step:
        seconds = time_model_step()
        tf_rate = results["tf.data train_pipeline (composed transform, parallel map)"][0]
        print(f"  PSPNet50 training step, batch 1 at {CROP}: {seconds:.2f} s = {1 / seconds:.2f} img/s; "
              f"input needs {100 / (seconds * tf_rate):.1f}% of the step time")


if __name__ == "__main__":
    main()
