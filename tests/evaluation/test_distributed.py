"""The evaluator under MirroredStrategy over two logical CPU devices equals the single-device run exactly.

The compiled device step takes 2 tiles per replica (batch_size 4 with flip): the mirrored run cuts each
global batch of 4 tiles into two blocks, the single-device run takes them 2 at a time, and the last
batch is padded in both."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # a process of its own, with two logical CPUs

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from support.protocol_cases import tiny_model
    from psp_tf.data.registry import open_dataset
    from psp_tf.evaluation import evaluator, protocol

    dataset = open_dataset("synthetic", None, "val", num_images=3)  # odd: the last step is padded
    single = tiny_model()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = tiny_model()
    mirrored.set_weights(single.get_weights())
    settings = protocol.settings_for(single, scales=(0.5, 1.0), batch_size=4)
    runs = {}
    for name, model, strat in (("single", single, None), ("mirrored", mirrored, strategy)):
        preds = {}
        result = evaluator.evaluate(model, dataset, settings, strategy=strat,
                                    on_prediction=lambda i, p: preds.__setitem__(i, p))
        runs[name] = (result, preds)
    (a, pa), (b, pb) = runs["single"], runs["mirrored"]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "confusion_equal": bool((a.confusion == b.confusion).all()),
        "confusion_total": int(a.confusion.sum()),
        "indices": sorted(pb),
        "predictions_equal": all((pa[i] == pb[i]).all() for i in pa) and sorted(pa) == sorted(pb),
        "miou": [a.summary["mean_iou"], b.summary["mean_iou"]],
    }))
""")


def test_mirrored_two_logical_cpus_equals_single_device():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", SCRIPT, TESTS], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["indices"] == [0, 1, 2]
    assert result["confusion_equal"] and result["predictions_equal"], result
    assert result["miou"][0] == result["miou"][1]
    assert result["confusion_total"] > 0
