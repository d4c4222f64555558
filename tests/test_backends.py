"""The network on every Keras 3 backend: a converted weights directory loads and runs unchanged under
KERAS_BACKEND=jax and torch (CPU) and gives TensorFlow's logits (issue 12, item 3).

TensorFlow's logits are computed once here, in this process; each other backend runs in one
subprocess of its own (tests/support/backend_forward.py: the backend is fixed when Keras is imported)
that loads every weights directory the selected tests need and writes its logits back. Both
processes run at the same time.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support.networks import randomize_bn
from support.weights import write_weights_dir
from psp_tf import build_pspnet

BACKENDS = ("jax", "torch")
FULL_SIZE = "test_pspnet50_gives_tensorflows_logits"
SCRIPT = os.path.join(os.path.dirname(__file__), "support", "backend_forward.py")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The agreement targets. They are not fitted to a run: both backends evaluate the same float32
# network and differ only in the order (blocking, FMA) of each n-term dot product. Each of those is
# within gamma_n of the exact value times the sum of |terms| in any order, and the probabilistic form
# of that bound (Higham & Mary 2019, Thm 3.1) gives lambda * sqrt(n) * u with overwhelming probability:
# for PSPNet50's largest sum (conv5_4: 9 x 4096 = 36,864 terms), 6 * 192 * 2^-24 = 7e-5 of the terms'
# magnitude per layer, and a few 1e-6 for the typical layer. A backend whose convolution, padding,
# pooling or Interp differed (a half-pixel resize, 'same' padding, a floor-mode pool, BN epsilon 1e-3)
# moves the logits by 1e-2 of their std or more, far outside RELATIVE_TOLERANCE.
RELATIVE_TOLERANCE = 1e-4  # of the TensorFlow logits' std
ARGMAX_AGREEMENT = 0.9999
TINY_BATCH = 2
# Each backend's process costs ~5 s of CPU importing Keras and its backend alone (building and loading
# 'tiny' is ~1.5 s since load_model's zero kernels; he_normal compiled ~20 s of XLA under JAX).
pytestmark = [pytest.mark.slow, pytest.mark.heavy(50)]


def _case(directory, name, model, batch, seed):
    images = np.random.default_rng(seed).uniform(0, 255, (batch, *model.input_shape[1:])).astype(np.float32)
    weights = write_weights_dir(model, os.path.join(directory, name))
    paths = {"weights": weights, "images": os.path.join(directory, f"{name}_images.npy")}
    np.save(paths["images"], images)
    return paths, np.asarray(model.predict_on_batch(images))


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
    """{case: (paths, TensorFlow logits)}: tiny always, PSPNet50@473 when its (slow) test is selected."""
    directory = str(tmp_path_factory.mktemp("backends"))
    cases = {"tiny": _case(directory, "tiny", randomize_bn(build_pspnet("tiny"), 0), TINY_BATCH, 1)}
    if any(item.name.startswith(FULL_SIZE) for item in request.session.items):
        model = randomize_bn(build_pspnet("pspnet50_ade20k"), 2)
        cases["pspnet50"] = _case(directory, "pspnet50", model, 1, 3)
        del model
    return directory, cases


@pytest.fixture(scope="module")
def backend_processes(reference):
    """Starts one process per backend at once, each running every case: {backend: (process, report path,
    stderr path, {case: logits path})}. Output goes to files, so neither can block on a full pipe."""
    directory, cases = reference
    started = {}
    for backend in BACKENDS:
        jobs = [{**paths, "logits": os.path.join(directory, f"{name}_{backend}.npy")}
                for name, (paths, _) in cases.items()]
        cases_path = os.path.join(directory, f"{backend}.json")
        with open(cases_path, "w") as f:
            json.dump(jobs, f)
        env = {**os.environ, "KERAS_BACKEND": backend,
               "PYTHONPATH": os.pathsep.join([REPOSITORY, os.environ.get("PYTHONPATH", "")])}
        stderr = os.path.join(directory, f"{backend}.stderr")
        with open(stderr, "w") as err:
            process = subprocess.Popen([sys.executable, SCRIPT, cases_path], env=env, stdout=subprocess.DEVNULL,
                                       stderr=err)
        started[backend] = (process, os.path.splitext(cases_path)[0] + ".report.json", stderr,
                            {name: job["logits"] for name, job in zip(cases, jobs)})
    yield started
    for process, *_ in started.values():
        if process.poll() is None:  # a failed test left it running
            process.kill()
            process.wait()


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, backend_processes):
    """One backend's finished run: (backend, report, {case: logits})."""
    backend = request.param
    process, report_path, stderr, logits = backend_processes[backend]
    returncode = process.wait(timeout=900)
    with open(stderr) as f:
        assert returncode == 0, f.read()[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    return backend, report, {name: np.load(path) for name, path in logits.items()}


def _check_agreement(want, got):
    assert got.shape == want.shape and got.dtype == np.float32
    error = np.abs(got - want).max() / want.std()
    assert error <= RELATIVE_TOLERANCE, error
    agree = want.argmax(-1) == got.argmax(-1)
    assert agree.mean() >= ARGMAX_AGREEMENT, agree.mean()
    # Any pixel that changes its class must be a near tie in TensorFlow's logits: within the two
    # backends' largest difference of each other (a real bug would flip pixels with clear margins).
    top2 = np.sort(want, axis=-1)[..., -2:]
    margin = (top2[..., 1] - top2[..., 0])[~agree]
    assert (margin <= 2 * np.abs(got - want).max()).all(), margin


def test_tiny_gives_tensorflows_logits_without_tensorflow(backend_run, reference):
    backend, report, logits = backend_run
    assert report["backend"] == backend
    # Loading and running need only Keras and the weights: the backend process never imported TF.
    assert report["tensorflow_imported"] is False
    _check_agreement(reference[1]["tiny"][1], logits["tiny"])


def test_other_input_size_is_one_clear_error_on_every_backend(backend_run):
    _, report, _ = backend_run
    for message in report["other_size_errors"]:
        assert message.startswith("UserError: the ") and "built for" in message, message
        assert "input_size=" in message and "psp_tf.predict" in message, message


@pytest.mark.slow
def test_pspnet50_gives_tensorflows_logits(backend_run, reference):
    _, _, logits = backend_run
    _check_agreement(reference[1]["pspnet50"][1], logits["pspnet50"])
