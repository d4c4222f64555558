"""SavedModel size (Keras's export vs psp_tf.export's one copy) and TFLite size, CPU latency and
agreement with the Keras model, for a full-size PSPNet with the synthetic caffemodel's weights.

The weights come from psp_tf.convert.synthetic (the author's layer list, realistic BN statistics),
loaded as psp-convert loads a real file, so the logits have a trained net's scale. Agreement is the
fraction of pixels whose argmax class equals the Keras float32 model's on `--images` fixed test
images; rel is max|d logit| / std(Keras logits). Latency: median of `--runs` invokes of one crop
([1, crop, crop, 3]) with `--threads` interpreter threads, after one warm-up.

    python benchmarks/export_benchmark.py [--preset pspnet50_ade20k] [--images 2] [--runs 3] [--threads 2]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from psp_tf import export  # noqa: E402
from psp_tf.convert import loader, reader, synthetic, verify  # noqa: E402
from psp_tf.model import build_pspnet  # noqa: E402


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(top, f)) for top, _, files in os.walk(path) for f in files)


def _model(preset, workdir):
    path = synthetic.write_caffemodel(os.path.join(workdir, "net.caffemodel"), synthetic.PRESET_PROTOTXTS[preset])
    model = build_pspnet(preset)
    loader.load_caffe_weights(model, reader.read_caffemodel(path))
    os.remove(path)
    return model


def _savedmodel_sizes(model, workdir):
    keras_dir, ours = os.path.join(workdir, "keras_export"), os.path.join(workdir, "network_module")
    model.export(keras_dir, verbose=False)
    tf.saved_model.save(export.network_module(model), ours)
    sizes = {"keras model.export": _size(os.path.join(keras_dir, "variables")),
             "psp_tf.export.network_module": _size(os.path.join(ours, "variables"))}
    shutil.rmtree(keras_dir)
    shutil.rmtree(ours)
    return sizes


def _tflite_row(model, kind, images, want, runs, threads, workdir):
    start = time.time()
    flat = export.tflite_network(model, kind)
    convert_s = time.time() - start
    path = os.path.join(workdir, f"network_{kind}.tflite")
    with open(path, "wb") as f:
        f.write(flat)
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    got, times = [], []
    for i, image in enumerate(images):
        for _ in range(1 if i else runs + 1):
            interpreter.set_tensor(inp, image[None])
            start = time.time()
            interpreter.invoke()
            times.append(time.time() - start)
        got.append(interpreter.get_tensor(out)[0])
    got = np.stack(got)
    agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    rel = float(np.max(np.abs(got - want)) / np.std(want))
    return (f"{kind:13s} {len(flat) / 2**20:8.1f} MiB  convert {convert_s:6.1f} s  latency "
            f"{np.median(times[1:runs + 1]):6.2f} s  agreement {100 * agreement:8.4f}%  rel {rel:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="pspnet50_ade20k", choices=sorted(synthetic.PRESET_PROTOTXTS))
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="export_bench_")
    try:
        model = _model(args.preset, workdir)
        weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
        print(f"{args.preset}: {weight_bytes / 2**20:.1f} MiB of float32 weights")
        for name, size in _savedmodel_sizes(model, workdir).items():
            print(f"SavedModel variables, {name:30s} {size / 2**20:8.1f} MiB")
        crop = model.input_shape[1:3]
        images = [verify.fixed_test_image(*crop, seed=i).astype(np.float32) for i in range(args.images)]
        want = np.concatenate([model.predict(image[None], verbose=0) for image in images])
        for kind in export.TFLITE_KINDS:
            print(_tflite_row(model, kind, images, want, args.runs, args.threads, workdir), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
