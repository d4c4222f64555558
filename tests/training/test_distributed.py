"""One code path for every strategy: MirroredStrategy over two logical CPUs and two local workers
(MultiWorkerMirroredStrategy, TF_CONFIG on 127.0.0.1) match one device with the same global batch.

Logical devices and collectives must be configured before TF initialises, hence subprocesses.
Tolerance: this tiny net's gradients are sensitive to float summation order, so each variable must
agree within 25% of how far training moved it; without sync BN two replicas miss that by more than
100%, which the last check shows. Sync BN takes the variance about the global mean
(psp_tf.layers.SyncBatchNormalization): with Keras' own E[x²] − E[x]², two replicas missed the
one-device weights by up to 21% of their update at crop 41 (6% at 137) and its loss by 3.6e-4
(relative); with the two-pass moments, 0.02% and 0 at crop 41, 1.6% and 7e-7 at 137 (this AMD machine,
2026-12-02). The trainings keep the preset's crop (support.training.CROP, 137).
The one-device reference and the two mirrored runs share one process with two logical CPUs (the
reference is MirroredStrategy over CPU:0 alone: one replica on one device, as in a one-device process).
"""

import json

import numpy as np
import pytest

from support.training import REFUSED, free_ports, results, run_script

# Subprocess trainings.
pytestmark = [pytest.mark.slow, pytest.mark.heavy(100)]

ARGS = ["--steps", "3", "--batch_size", "4"]
REPLICA = "/job:localhost/replica:0/task:0/device:CPU:{}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (result line, weights)} of the one-device reference ('one', sync BN), two mirrored replicas
    with sync BN ('two') and without ('two_unsynced'), all in one process; the untrained start; and the
    REFUSED lines of that process."""
    tmp = tmp_path_factory.mktemp("dist")

    def place(name):
        return ["--workdir", str(tmp / name), "--out", str(tmp / f"{name}.npz")]

    # The first run's flags are every run's: the unsynced one first (--sync_bn cannot be unset later).
    # A batch two replicas cannot split is refused before anything is made (a run in this process,
    # where two logical CPUs exist, rather than a TensorFlow start of its own).
    then = [[*place("one"), "--sync_bn", "--devices", "1"], [*place("two"), "--sync_bn"],
            [*place("refused"), "--batch_size", "3"]]
    done = run_script([*place("two_unsynced"), *ARGS, "--strategy", "mirrored", "--cpu_devices", "2",
                       "--then", json.dumps(then)])
    assert done.returncode == 0, done.stderr[-3000:]
    refused = [line for line in done.stdout.splitlines() if line.startswith(REFUSED)]
    trained = {}
    for info in results(done.stdout):
        name = info["workdir"].rsplit("/", 1)[-1]
        trained[name] = (info, dict(np.load(tmp / f"{name}.npz")))
    assert sorted(trained) == ["one", "two", "two_unsynced"]
    assert trained["one"][0]["replicas"] == [REPLICA.format(0)]
    import keras

    from psp_tf import build_pspnet

    keras.utils.set_random_seed(0)  # the trainer's --seed 0 initialisation
    start = {v.path: np.asarray(v)
             for v in build_pspnet("tiny", aux_head=True, dropout=0.0).weights}
    return tmp, trained, start, refused


def _worst(a, b, start):
    """max over variables of max|a - b| / max|a - start|: disagreement relative to the update."""
    ratios = {}
    for name, value in a.items():
        if "seed_generator" in name:
            continue
        moved = np.abs(value - start[name]).max()
        assert moved > 0, name
        ratios[name] = float(np.abs(value - b[name]).max() / moved)
    worst = max(ratios, key=ratios.get)
    return ratios[worst], worst


def test_mirrored_two_logical_cpus_equals_one_device_with_sync_bn(runs):
    tmp, trained, start, _ = runs
    one_info, one = trained["one"]
    info, two = trained["two"]
    assert info["replicas"] == [REPLICA.format(0), REPLICA.format(1)]
    assert info["loss"] == pytest.approx(one_info["loss"], rel=1e-5)
    ratio, name = _worst(one, two, start)
    assert ratio < 0.25, name
    # Without sync BN each replica normalises with its own half batch: a different function.
    info, unsynced = trained["two_unsynced"]
    assert info["replicas"] == [REPLICA.format(0), REPLICA.format(1)]
    assert info["loss"] != pytest.approx(one_info["loss"], rel=1e-4)
    assert _worst(one, unsynced, start)[0] > 1.0


def test_batch_not_divisible_by_replicas_is_refused_before_anything_is_written(runs):
    tmp, _, _, refused = runs
    message = "--batch_size=3 is not divisible by the 2 replicas of --strategy mirrored"
    assert refused == [f"{REFUSED} {message}"], refused
    assert not (tmp / "refused").exists() and not (tmp / "refused.npz").exists()


def test_two_local_workers_train_together(runs):
    tmp, trained, start, _ = runs
    one_info, one = trained["one"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs = []
    for index in range(2):
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        out = str(tmp / f"worker{index}.npz")
        args = ["--workdir", str(tmp / "workers"), "--out", out, *ARGS, "--strategy", "multiworker", "--sync_bn"]
        procs.append((run_script(args, env=env, wait=False), out))
    worker_results = []
    for proc, out in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        worker_results.append((results(stdout)[-1], dict(np.load(out))))
    (info0, w0), (info1, w1) = worker_results
    assert len(info0["devices"]) == 2 and "/job:worker/replica:0/task:1/device:CPU:0" in info0["devices"]
    assert info0["loss"] == info1["loss"] == pytest.approx(one_info["loss"], rel=1e-5)
    for name in w0:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)  # one model, kept in sync
    ratio, name = _worst(one, w0, start)
    assert ratio < 0.25, name
    assert (tmp / "workers" / "checkpoints" / "ckpt-3.index").exists()
    assert not (tmp / "workers" / ".worker_tmp").exists()
