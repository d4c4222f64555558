"""Peak memory of prediction and evaluation: each case in its own process under `/usr/bin/time -v`.

    python benchmarks/memory_benchmark.py                       # every case, this checkout's code
    python benchmarks/memory_benchmark.py --case predict_4000x3000 --case eval_ms_384x512_b2
    python benchmarks/memory_benchmark.py --code /path/to/other/checkout --case ...   # e.g. old code

Cases (random-weight networks from psp_tf.build_pspnet: a converted network has the same layers and
weight tensors, so the same memory; only the time to reach the peak is spent on arithmetic):
  predict_WxH          PSPNet50/ADE20K (150 classes), one W x H photo, scale 1, flip, batch 2: the
                       call psp-predict makes (labels only where the code offers it).
  eval_ms_384x512_bB   PSPNet50/ADE20K, evaluator.evaluate on one 384x512 image, --scales ms, batch B
                       (B // 2 images per replica, as evaluate.py), confusion matrix and labels.
  eval_ms_cityscapes   PSPNet101/Cityscapes, evaluator.evaluate on one 1024x2048 image, --scales ms,
                       batch 2: 81 tiles x 2 forwards at 713 (~40 s each in float32 on 2 shared
                       cores, so ~2 h; --precision bfloat16 is faster and halves the activations).
  eval_ms_cityscapes_tinynet  the same evaluation with the tiny preset's network at crop 713, K = 19,
                       base size 2048: the same tiles, sums, score maps and strips (all but the
                       network's activations) in minutes.
  network_pspnet101_713  one network batch of eval_ms_cityscapes (a tile and its mirror, 2 x 713 x 713)
                       through PSPNet101/Cityscapes: the network's own peak. Batches run one after
                       another, so eval_ms_cityscapes peaks at about the sum of the two growths.

The README's peak-memory figures come from this script. Prints one JSON line
per case: peak RSS (`Maximum resident set size` of /usr/bin/time -v), the RSS
right after building the model (TensorFlow + weights), wall time. Run on an otherwise idle machine:
one case at a time, several GB each.
"""

import argparse
import inspect
import json
import os
import re
import resource
import subprocess
import sys
import time

CASES = ("predict_1280x960", "predict_2000x1500", "predict_4000x3000", "eval_ms_384x512_b2",
         "eval_ms_384x512_b4", "eval_ms_cityscapes", "eval_ms_cityscapes_tinynet", "network_pspnet101_713")


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB (1e6 KiB ~ 1.02 GB)


def _image(height, width, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 100 * np.sin(xx[..., None] / 37.0) * np.cos(yy[..., None] / 23.0)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


class _OneImage:
    """The Dataset interface evaluator.evaluate reads (len, read, num_classes, class_names, has_labels)."""

    def __init__(self, image, num_classes):
        import numpy as np

        self.image = image
        self.label = (np.arange(image.shape[0] * image.shape[1]) % num_classes).astype(np.uint8).reshape(
            image.shape[:2])
        self.num_classes = num_classes
        self.class_names = tuple(f"c{i}" for i in range(num_classes))
        self.has_labels = True

    def __len__(self):
        return 1

    def read(self, index):
        return self.image, self.label


def worker(case, precision):
    """Runs one case in this process; returns a dict of what it measured itself."""
    import psp_tf
    from psp_tf.evaluation import evaluator, protocol

    if case.startswith("predict_"):
        width, height = (int(v) for v in case.split("_")[1].split("x"))
        model = psp_tf.build_pspnet("pspnet50_ade20k", precision=precision)
        img = _image(height, width)
        after_model = _rss_gb()
        start = time.perf_counter()
        kwargs = {}
        if "probabilities" in inspect.signature(protocol.predict).parameters:
            kwargs["probabilities"] = False  # what the predict CLI asks for
        result = protocol.predict(model, img, scales=(1.0,), flip=True, batch_size=2, **kwargs)
        assert result.labels.shape == (height, width)
        return {"after_model_gb": round(after_model, 2), "seconds": round(time.perf_counter() - start, 1),
                "labels_only": bool(kwargs)}
    if case == "network_pspnet101_713":
        import tensorflow as tf

        model = psp_tf.build_pspnet("pspnet101_cityscapes", precision=precision)
        after_model = _rss_gb()
        start = time.perf_counter()
        protocol.network_function(model)(tf.random.uniform([2, 713, 713, 3], 0, 255)).numpy()
        return {"after_model_gb": round(after_model, 2), "seconds": round(time.perf_counter() - start, 1)}
    if case == "eval_ms_cityscapes_tinynet":
        model = psp_tf.build_pspnet("tiny", crop_size=(713, 713), num_classes=19, base_size=2048)
        preset, img, batch = None, _image(1024, 2048), 2
    elif case.startswith("eval_ms_384x512_b"):
        preset, img, batch = "pspnet50_ade20k", _image(384, 512), int(case.rsplit("b", 1)[1])
    else:
        preset, img, batch = "pspnet101_cityscapes", _image(1024, 2048), 2
    if preset is not None:
        model = psp_tf.build_pspnet(preset, precision=precision)
    settings = protocol.settings_for(model, "ms", True, batch_size=batch)
    after_model = _rss_gb()
    start = time.perf_counter()
    grouping = {}
    if "images_per_replica" in inspect.signature(evaluator.evaluate).parameters:  # code before the device step
        grouping["images_per_replica"] = max(1, batch // 2)
    result = evaluator.evaluate(model, _OneImage(img, model.psp_config.num_classes), settings, **grouping)
    assert result.num_images == 1
    return {"after_model_gb": round(after_model, 2), "seconds": round(time.perf_counter() - start, 1)}


def run_case(case, code, precision):
    """The case in a subprocess under /usr/bin/time -v: its own report plus the peak RSS."""
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2")
    command = ["/usr/bin/time", "-v", sys.executable, os.path.abspath(__file__), "--worker", case,
               "--precision", precision]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    report = {"case": case, "code": code, "precision": precision, "exit": proc.returncode,
              "peak_rss_gb": round(int(peak.group(1)) * 1024 / 1e9, 2) if peak else None}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        report.update(json.loads(lines[-1]))
    if proc.returncode:
        report["stderr_tail"] = proc.stderr.strip().splitlines()[-3:]
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=CASES, help="repeatable; default: all")
    parser.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="checkout whose psp_tf is measured (PYTHONPATH of the subprocess)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.precision)))
        return
    for case in args.case or CASES:
        print(json.dumps(run_case(case, args.code, args.precision)), flush=True)


if __name__ == "__main__":
    main()
