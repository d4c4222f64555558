"""Helpers for the training tests, and a subprocess entry point (logical devices, TF_CONFIG, kills).

Run as a script it trains the tiny model on a seeded in-memory input for --steps and writes the final
weights to --out (.npz). The input is a pure function of (seed, global step), split by replica, so the
global batch is the same whatever the number of replicas or workers.

Each run ends with one JSON line (see `results`), or, when the library refuses its config, one line
`REFUSED <message>` (and the next run goes on). --then runs more trainings in the same process after
the first, each with the first's arguments plus its own (later flags win): the tests pay TensorFlow's
import once for several runs (the model and its step are still built and traced anew for each).
"""

import argparse
import json
import os
import socket
import subprocess
import sys

import numpy as np

CROP = 137
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)


def make_input_fn(seed=3, bad_step=None, crop=CROP, bad_scale=np.nan):
    """An input_fn (input_context, per_replica_batch, start_step) -> per-replica batches.

    Global step s has a global batch of `per_replica * replicas` images built from seed (seed, s);
    replica r of the step gets rows [r*b, (r+1)*b). With `bad_step`, that step's images are
    multiplied by `bad_scale` (NaN by default).
    """
    import tensorflow as tf

    def input_fn(ctx, batch, start_step):
        replicas = ctx.num_replicas_in_sync if ctx else 1
        pipelines = ctx.num_input_pipelines if ctx else 1
        pipeline = ctx.input_pipeline_id if ctx else 0
        local = replicas // pipelines

        def global_batch(step):
            key = tf.stack([tf.cast(step, tf.int64), tf.constant(seed, tf.int64)])
            images = tf.random.stateless_uniform([batch * replicas, crop, crop, 3], key, 0, 255)
            # A learnable, spatial label: bright-red blobs vs the rest, plus an ignored border.
            smooth = tf.nn.avg_pool2d(images, 9, 1, "SAME")
            labels = tf.cast(smooth[..., 0] > smooth[..., 1], tf.int32) + tf.cast(smooth[..., 2] > 140, tf.int32)
            labels = tf.pad(labels[:, 2:-2, 2:-2], [[0, 0], [2, 2], [2, 2]], constant_values=255)
            if bad_step is not None:
                images = tf.where(tf.equal(step, bad_step - 1), images * bad_scale, images)
            return images, labels

        def per_replica(step):
            images, labels = global_batch(step)
            rows = [(pipeline * local + r) * batch for r in range(local)]
            return tf.data.Dataset.from_tensor_slices((
                tf.stack([images[i:i + batch] for i in rows]), tf.stack([labels[i:i + batch] for i in rows])))

        return tf.data.Dataset.range(start_step, 1 << 40).flat_map(per_replica)

    return input_fn


def write_pspnet_dir(directory, model):
    """A converted-model directory as psp-convert writes it (what psp_tf.load_model reads)."""
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"preset": model.psp_config.name, "config": model.psp_config.to_dict()}, f)
    return str(directory)


def weights_of(model):
    return {v.path: np.asarray(v) for v in model.weights}


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_script(args, env=None, timeout=300, wait=True):
    """Runs this file as a subprocess with `args`; returns the CompletedProcess (or Popen)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS]), **(env or {})}
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


RESULT = '{"step"'  # how each training's JSON line starts
REFUSED = "REFUSED"  # how the line of a run the library refused starts


def results(stdout):
    """The JSON result lines a run of this script printed, one per training, in order."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith(RESULT)]


def _parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--cpu_devices", type=int, default=0, help="logical CPU devices to create")
    parser.add_argument("--checkpoint_every", type=int, default=100)
    parser.add_argument("--sync_bn", action="store_true")
    parser.add_argument("--bad_step", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--devices", type=int, default=0,
                        help="--strategy mirrored over the first N logical CPUs only (0: all of them)")
    parser.add_argument("--then", default="[]",
                        help="JSON list of argument lists: more runs in this process after the first, each "
                             "with the first's arguments followed by its own")
    return parser


def main():
    parser = _parser()
    first = parser.parse_args()
    import tensorflow as tf

    args = first
    if args.cpu_devices:
        # Must happen before TF initialises its devices: the reason this runs in a subprocess.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    tf.config.experimental.enable_op_determinism()
    for extra in [[]] + json.loads(first.then):
        args = parser.parse_args(sys.argv[1:] + extra)
        assert args.cpu_devices == first.cpu_devices, "logical devices exist once per process"
        _train_once(args)


def _train_once(args):
    import tensorflow as tf

    from psp_tf.errors import UserError
    from psp_tf.training import TrainConfig, trainer
    from psp_tf.training.trainer import Preempted, TrainingDiverged, train

    made = []

    def make_strategy(name, tpu=None):  # the library's, recording what it made (and --devices)
        # Each MirroredStrategy numbers its collectives (sync BN's all-reduces) from its class's key base:
        # a second one in this process would reuse the first's keys, which the collective executor has
        # bound to the first's devices. TensorFlow's own tests move the base on the same way
        # (tensorflow/python/distribute/strategy_combinations.py).
        tf.distribute.MirroredStrategy._collective_key_base += 100000
        if args.devices:
            assert name == "mirrored", "--devices is for --strategy mirrored"
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            made.append(tf.distribute.MirroredStrategy(cpus[:args.devices]))
        else:
            made.append(library_make_strategy(name, tpu))
        return made[-1]

    library_make_strategy = trainer.make_strategy
    config = TrainConfig(workdir=args.workdir, steps=args.steps, batch_size=args.batch_size,
                         strategy=args.strategy, checkpoint_every=args.checkpoint_every,
                         sync_bn=args.sync_bn, lr=args.lr, steps_per_execution=args.steps_per_execution)
    overrides = {"dropout": 0.0} if args.cpu_devices or args.strategy != "default" else {}
    trainer.make_strategy = make_strategy
    try:
        result = train(config, input_fn=make_input_fn(bad_step=args.bad_step), evaluate_fn=False,
                       model_overrides=overrides)
    except UserError as e:
        print(f"{REFUSED} {e}", flush=True)
        return
    except TrainingDiverged as e:
        print(f"DIVERGED {e}", flush=True)
        sys.exit(1)
    except Preempted as e:
        print(f"PREEMPTED {e.step}", flush=True)
        sys.exit(143)
    finally:
        trainer.make_strategy = library_make_strategy
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]  # after the strategy exists
    replicas = list(made[-1].extended.worker_devices) if args.strategy == "mirrored" else []
    if args.out:
        np.savez(args.out, **weights_of(result.model))
    print(json.dumps({"step": result.step, "loss": result.loss, "devices": devices, "replicas": replicas,
                      "workdir": args.workdir}), flush=True)


if __name__ == "__main__":
    main()
