"""Runs converted weights directories under the Keras backend of $KERAS_BACKEND (tests/test_backends.py).

Usage: KERAS_BACKEND=jax python backend_forward.py CASES_JSON. CASES_JSON lists
{"weights": DIR, "images": NPY, "logits": NPY}; for each case the directory is loaded with
psp_tf.model_dir.load_model, the images' logits are written to "logits", and the one JSON report
(REPORT next to CASES_JSON) says which backend ran, whether TensorFlow was ever imported, and what a
call at another input size raised. A script, not a test: KERAS_BACKEND must be set before Keras is
imported, so each backend needs a process of its own (the test runs one per backend, for all cases).
"""

import json
import os
import sys

import keras
import numpy as np

from psp_tf.model_dir import load_model


def run_case(case):
    model = load_model(case["weights"])
    images = np.load(case["images"])
    np.save(case["logits"], keras.ops.convert_to_numpy(model.predict_on_batch(images)))
    height, width = model.psp_config.crop_size
    try:
        model(np.zeros((1, height + 8, width + 8, 3), np.float32))
        return "no error"
    except ValueError as e:
        return f"{type(e).__name__}: {e}"


def main(cases_path):
    with open(cases_path) as f:
        cases = json.load(f)
    other_size = [run_case(case) for case in cases]
    report = {"backend": keras.backend.backend(), "tensorflow_imported": "tensorflow" in sys.modules,
              "other_size_errors": other_size}
    with open(os.path.splitext(cases_path)[0] + ".report.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
