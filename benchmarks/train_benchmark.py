"""Training throughput (images/s) and peak memory of the real train step, and the demo's wall time + mIoU.

    python benchmarks/train_benchmark.py                        # tiny b8 @137 and pspnet50_ade20k b2 @473,
                                                                # each with and without XLA (--jit both)
    python benchmarks/train_benchmark.py --configs tiny:8:137 --mixed_precision bf16
    python benchmarks/train_benchmark.py --demo                 # times `python train.py` (the README demo)

Each configuration runs in its own process (peak RSS is per process): build the training model (aux
head, sync BN off, L2 decay), trace the distributed train call (psp_tf.training.trainer.make_train_step,
--steps_per_execution steps a call), run --warmup calls, then time --steps calls on an in-memory batch (the input pipeline is benchmarked by the data engineer separately).
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(preset, batch, crop, steps, warmup, mixed_precision, jit_compile, steps_per_execution):
    """Runs in a child process; returns a dict of figures (`steps` calls of `steps_per_execution`)."""
    import tempfile

    import tensorflow as tf

    sys.path.insert(0, REPO)
    from psp_tf.model import conv_macs
    from psp_tf.training import config as config_lib
    from psp_tf.training import inputs
    from psp_tf.training.state import build_state
    from psp_tf.training.trainer import make_train_step

    cfg = inputs.resolve_run(config_lib.resolve(config_lib.TrainConfig(
        preset=preset, batch_size=batch, crop_size=crop, steps=10_000, mixed_precision=mixed_precision,
        jit_compile=jit_compile, steps_per_execution=steps_per_execution, workdir=tempfile.mkdtemp())), None)
    strategy = tf.distribute.get_strategy()
    num_classes = cfg.network.num_classes

    def input_fn(ctx, per_replica, start):
        images = tf.random.stateless_uniform([per_replica, crop, crop, 3], [1, 2], 0, 255)
        labels = tf.random.stateless_uniform([per_replica, crop, crop], [3, 4], 0, num_classes, tf.int32)
        return tf.data.Dataset.from_tensors((images, labels)).repeat()

    state = build_state(cfg, strategy, input_fn)
    train_steps = make_train_step(state, strategy, cfg)
    iterator = iter(state.make_dataset(0))
    stop, count = tf.constant(0.0), tf.constant(steps_per_execution, tf.int32)
    t0 = time.perf_counter()
    float(train_steps(iterator, stop, count)["loss"])
    first = time.perf_counter() - t0
    for _ in range(warmup):
        float(train_steps(iterator, stop, count)["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        float(train_steps(iterator, stop, count)["loss"])
    seconds = (time.perf_counter() - t0) / (steps * steps_per_execution)
    return {"preset": preset, "batch": batch, "crop": crop, "mixed_precision": mixed_precision,
            "jit_compile": jit_compile, "steps_per_execution": steps_per_execution,
            "seconds_per_step": seconds, "images_per_second": batch / seconds,
            "first_call_seconds (trace + compile + run)": first,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "forward_gmacs_per_image": conv_macs(state.inference_model) / 1e9,
            "devices": [d.name for d in tf.config.list_logical_devices()]}


def demo():
    """Times the README's main command in a fresh work directory and parses its mIoU."""
    import tempfile

    workdir = tempfile.mkdtemp(prefix="demo_")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--workdir", workdir],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    match = re.search(r"^mIoU ([0-9.]+) after (\d+) steps", done.stdout, re.M)
    return {"command": "python train.py", "returncode": done.returncode, "wall_seconds": wall,
            "miou": float(match.group(1)) if match else None, "steps": int(match.group(2)) if match else None}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} x{len(names)}" if names else "unknown"
    except OSError:
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny:8:137,pspnet50_ade20k:2:473",
                        help="comma-separated preset:batch:crop")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mixed_precision", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--jit", default="both", choices=["both", "on", "off"],
                        help="XLA-compile the train step: both = measure compiled and not, in turn")
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--demo", action="store_true", help="time `python train.py` instead")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, batch, crop, jit = args.child.split(":")
        print(json.dumps(measure(preset, int(batch), int(crop), args.steps, args.warmup, args.mixed_precision,
                                 jit == "on", args.steps_per_execution)))
        return
    print(f"machine: {cpu_model()}")
    if args.demo:
        print(json.dumps(demo(), indent=1))
        return
    modes = ["off", "on"] if args.jit == "both" else [args.jit]
    for item in args.configs.split(","):
        speeds = {}
        for jit in modes:
            done = subprocess.run([sys.executable, __file__, "--child", f"{item}:{jit}", "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--mixed_precision", args.mixed_precision,
                                   "--steps_per_execution", str(args.steps_per_execution)],
                                  capture_output=True, text=True)
            if done.returncode:
                print(f"{item} jit {jit}: failed\n{done.stderr[-2000:]}")
                continue
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            speeds[jit] = figures["images_per_second"]
            print(json.dumps(figures, indent=1), flush=True)
        if len(speeds) == 2:
            print(f"{item}: XLA-compiled / not = {speeds['on'] / speeds['off']:.2f}x images/s", flush=True)


if __name__ == "__main__":
    main()
