"""The network on each Keras 3 backend (CPU): agreement with TensorFlow's logits and forward time.

    python benchmarks/backend_benchmark.py [--presets tiny,pspnet50_ade20k] [--repeats 3]

The parent (TensorFlow) writes one weights directory per preset (random He weights, randomised BN
statistics), its images and TensorFlow's logits; then one process per backend (KERAS_BACKEND is fixed
when Keras is imported) loads each directory with psp_tf.load_model and times `predict_on_batch`
(compiled: tf.function, jax.jit; torch runs eagerly), batch 1 at the preset's crop, median of
--repeats after one warm-up. Prints one markdown row per backend and preset: the load time, the
first (compiling) call, the steady forward time, the largest logit difference from TensorFlow
relative to the logits' std, and the argmax agreement. Compare ratios within one run only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")


def _child(cases_path, repeats):
    import keras

    from psp_tf.model_dir import load_model

    rows = []
    for case in json.load(open(cases_path)):
        start = time.perf_counter()
        model = load_model(case["weights"])
        loaded = time.perf_counter()
        images = np.load(case["images"])
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(images))
        first = time.perf_counter()
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            model.predict_on_batch(images)
            times.append(time.perf_counter() - begin)
        want = np.load(case["reference"])
        rows.append({"backend": keras.backend.backend(), "preset": case["preset"],
                     "load_s": loaded - start, "first_s": first - loaded, "forward_s": float(np.median(times)),
                     "max_diff_over_std": float(np.abs(logits - want).max() / want.std()),
                     "argmax_agreement": float((logits.argmax(-1) == want.argmax(-1)).mean())})
        del model
    json.dump(rows, open(cases_path + ".out", "w"))


def _write_cases(directory, presets):
    import keras

    from psp_tf import build_pspnet
    from psp_tf.model_dir import model_metadata, write_model_dir

    cases = []
    for index, preset in enumerate(presets):
        model = build_pspnet(preset)
        rng = np.random.default_rng(index)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                                   rng.uniform(0.5, 2.0, c)])
        weights = os.path.join(directory, preset)
        os.makedirs(weights)
        write_model_dir(model, weights, model_metadata(model.psp_config, preset, {"benchmark": True}))
        images = rng.uniform(0, 255, (1, *model.input_shape[1:])).astype(np.float32)
        case = {"preset": preset, "weights": weights, "images": os.path.join(directory, f"{preset}_x.npy"),
                "reference": os.path.join(directory, f"{preset}_tf.npy")}
        np.save(case["images"], images)
        np.save(case["reference"], np.asarray(model.predict_on_batch(images)))
        cases.append(case)
        del model
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,pspnet50_ade20k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.repeats)
    with tempfile.TemporaryDirectory() as directory:
        cases_path = os.path.join(directory, "cases.json")
        json.dump(_write_cases(directory, args.presets.split(",")), open(cases_path, "w"))
        print("| backend | preset | load s | first call s | forward s | max diff / std | argmax agreement |")
        print("|---|---|---|---|---|---|---|")
        for backend in BACKENDS:
            subprocess.run([sys.executable, __file__, "--child", cases_path, "--repeats", str(args.repeats)],
                           env={**os.environ, "KERAS_BACKEND": backend}, check=True)
            for row in json.load(open(cases_path + ".out")):
                print(f"| {row['backend']} | {row['preset']} | {row['load_s']:.1f} | {row['first_s']:.1f} | "
                      f"{row['forward_s']:.3f} | {row['max_diff_over_std']:.1e} | {row['argmax_agreement']:.6f} |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
