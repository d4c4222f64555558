"""Cost of decoding as the author's tools did: accurate-DCT JPEG and checked label PNGs, per image.

Times, in a tf.data map (one call at a time, so CPU-ms per image do not depend on the core count):
  1. psp_tf.data.decode.decode_image (libjpeg's accurate integer DCT, OpenCV's pixels);
  2. tf.io.decode_image (TensorFlow's default, the fast integer DCT the pipelines used before);
  3. decode.decode_label with its PNG header check against a plain tf.io.decode_png + table look-up;
and OpenCV's imdecode of the same bytes for reference. Images are ~512x683 JPEGs (ADE20K's typical
size), quality 90, 4:2:0, written by OpenCV.

Run: python benchmarks/decode_benchmark.py [--images 300]
"""

import argparse
import os
import time

import cv2
import numpy as np
import tensorflow as tf

from psp_tf.data import decode


def sample_files(count=8, seed=0):
    """(JPEG bytes, label PNG bytes) pairs: smooth colour fields with noise, random label blobs."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        small = rng.integers(0, 256, (16, 22, 3), np.uint8)
        image = cv2.resize(small, (683, 512), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        label = cv2.resize(rng.integers(0, 151, (16, 22), np.uint8), (683, 512), interpolation=cv2.INTER_NEAREST)
        pairs.append((cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
                      cv2.imencode(".png", label)[1].tobytes()))
    return pairs


def time_map(data, fn, count):
    """(CPU-ms per call, wall images/s) of `fn` over `count` items in a sequential tf.data map."""
    stream = tf.data.Dataset.from_tensor_slices(data).repeat().take(count)
    stream = stream.map(fn, num_parallel_calls=1).map(lambda x: tf.shape(x)[0])
    for _ in stream.take(4):  # warm-up: tracing and first allocations
        pass
    start, cpu = time.perf_counter(), time.process_time()
    for _ in stream:
        pass
    return 1000 * (time.process_time() - cpu) / count, count / (time.perf_counter() - start)


def time_opencv(data, count):
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        cv2.imdecode(np.frombuffer(data[i % len(data)], np.uint8), flags)
    return 1000 * (time.process_time() - cpu) / count, count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="decodes timed per implementation")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pairs = sample_files()
    jpegs, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    lut = tf.constant(np.arange(256, dtype=np.int32))
    results = {
        "decode.decode_image (accurate DCT, as OpenCV)": time_map(jpegs, decode.decode_image, args.images),
        "tf.io.decode_image (fast DCT, TF default)": time_map(
            jpegs, lambda d: tf.io.decode_image(d, channels=3, expand_animations=False), args.images),
        "cv2.imdecode (reference)": time_opencv(jpegs, args.images),
        "decode.decode_label (header check, grey)": time_map(
            labels, lambda d: decode.decode_label(d, lut, decode.GREY, "x"), args.images),
        "tf.io.decode_png + table (unchecked)": time_map(
            labels, lambda d: tf.gather(lut, tf.cast(tf.io.decode_png(d, channels=1)[..., 0], tf.int32)),
            args.images),
    }
    print(f"512x683, JPEG q90 4:2:0 / 8-bit grey label PNG, one decode at a time, {os.cpu_count()} CPUs, "
          f"{args.images} decodes each")
    for name, (cpu_ms, rate) in results.items():
        print(f"  {cpu_ms:6.2f} CPU-ms/img  {rate:7.1f} img/s  {name}")


if __name__ == "__main__":
    main()
