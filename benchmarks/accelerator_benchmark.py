"""Accelerator throughput of the PSPNets under Keras 3's JAX backend: forward passes and a training step.

Written for one short call on a GPU machine that has JAX (with CUDA) but no TensorFlow, no Keras and no
package registry: `benchmarks/accelerator_benchmark.sh` installs Keras 3 and its small pure-Python
dependencies from the wheels in benchmarks/wheels/ (see that script for the `pip download` that fills
it) and runs this file with KERAS_BACKEND=jax. The network (psp_tf.model) is Keras layers and
keras.ops only, so it builds without TensorFlow.

    sh benchmarks/accelerator_benchmark.sh              # full run: < 8 min on an H200
    sh benchmarks/accelerator_benchmark.sh --quick      # tiny sizes, a couple of minutes on a CPU
    KERAS_BACKEND=jax python benchmarks/accelerator_benchmark.py --quick   # where Keras is installed

What it times, each as one `jax.jit` function of (weights, batch), after a compile-and-warm-up call:
- the forward pass (inference, float32 logits) of the three released presets at their crop
  (pspnet50_ade20k@473, pspnet101_voc2012@473, pspnet101_cityscapes@713) at batch 1, 8 and 32, in
  float32 and in bfloat16 (`build_pspnet(precision=...)`);
- a training step of PSPNet50@473 with the aux head in bfloat16 at batch 8 and 16: forward,
  CE(main) + 0.4·CE(aux), backward, SGD with momentum 0.9 (BN in training mode).
For each it prints images/s and the fraction of the machine's bf16 matmul peak, measured first in
the same run with a large `jnp.matmul` (FLOPs = 2 · conv MACs for a forward pass, 3× that for a
training step: the backward pass costs two matmuls per forward matmul). A config that runs out of
memory or past the time budget is reported as such and the run goes on; the exit status is 1 if any
config failed.
"""

import argparse
import gc
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from psp_tf.model import build_pspnet, conv_macs  # noqa: E402

FULL = {
    "forward": [("pspnet50_ade20k", 473), ("pspnet101_voc2012", 473), ("pspnet101_cityscapes", 713)],
    "forward_batches": (1, 8, 32),
    "train": ("pspnet50_ade20k", 473),
    "train_batches": (8, 16),
    "matmul_size": 8192,
    "min_seconds": 1.0,
}
# Same code paths at sizes a CPU runs in a couple of minutes (the tiny preset at its crop).
QUICK = {
    "forward": [("tiny", 89), ("tiny", 137)],
    "forward_batches": (1, 2),
    "train": ("tiny", 137),
    "train_batches": (2,),
    "matmul_size": 512,
    "min_seconds": 0.2,
}
AUX_WEIGHT = 0.4
LEARNING_RATE = 1e-3
MOMENTUM = 0.9


def time_call(fn, args, min_seconds, min_repeats=3):
    """Median seconds of `fn(*args)` (blocked until ready) after one compile-and-warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    while len(times) < min_repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bf16_matmul_peak(n, min_seconds):
    """FLOP/s of an n×n×n bfloat16 matmul with float32 accumulation (the machine's practical peak)."""
    keys = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(keys[0], (n, n), jnp.bfloat16)
    b = jax.random.normal(keys[1], (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    return 2 * n ** 3 / time_call(matmul, (a, b), min_seconds)


def variables(model):
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])


def forward_fn(model):
    """jit(weights, images) -> logits: the inference pass as one compiled function."""
    def forward(trainable, non_trainable, images):
        logits, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return logits
    return jax.jit(forward)


def cross_entropy(logits, labels):
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def train_step_fn(model):
    """jit(weights, momenta, images, labels) -> new state and loss: forward, backward, SGD + momentum."""
    def loss_fn(trainable, non_trainable, images, labels):
        (main, aux), non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        return cross_entropy(main, labels) + AUX_WEIGHT * cross_entropy(aux, labels), non_trainable

    def step(trainable, non_trainable, momenta, images, labels):
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, images, labels)
        momenta = [MOMENTUM * m - LEARNING_RATE * g for m, g in zip(momenta, grads)]
        trainable = [w + m for w, m in zip(trainable, momenta)]
        return trainable, non_trainable, momenta, loss
    # The old state is not used again: donating it lets XLA update the weights in place.
    return jax.jit(step, donate_argnums=(0, 1, 2))


def images_for(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))


def run_forward(model, batch, settings, peak):
    fn = forward_fn(model)
    trainable, non_trainable = variables(model)
    size = model.psp_config.crop_size[0]
    seconds = time_call(fn, (trainable, non_trainable, images_for(batch, size)), settings["min_seconds"])
    flops = 2 * conv_macs(model) * batch
    return {"seconds": seconds, "images_per_s": batch / seconds, "peak_fraction": flops / seconds / peak}


def run_train(preset, size, batch, settings, peak):
    model = build_pspnet(preset, input_size=size, precision="bfloat16", aux_head=True)
    step = train_step_fn(model)
    trainable, non_trainable = variables(model)
    momenta = [jnp.zeros_like(w) for w in trainable]
    images = images_for(batch, size)
    labels = jnp.asarray(np.random.default_rng(1).integers(0, model.psp_config.num_classes,
                                                           (batch, size, size)).astype(np.int32))
    state = [trainable, non_trainable, momenta]

    def one_step():
        # Each call consumes (donates) the previous state, as a real training loop does.
        state[0], state[1], state[2], loss = step(state[0], state[1], state[2], images, labels)
        return loss

    seconds = time_call(lambda: one_step(), (), settings["min_seconds"])
    flops = 3 * 2 * conv_macs(model) * batch
    return {"seconds": seconds, "images_per_s": batch / seconds, "peak_fraction": flops / seconds / peak}


def guarded(label, fn, deadline, results):
    """Runs one config unless the time budget is spent; an out-of-memory error is a result, not a stop."""
    if time.perf_counter() > deadline:
        print(f"| {label} | skipped: time budget spent |", flush=True)
        return
    try:
        row = fn()
    except Exception as error:  # XlaRuntimeError (RESOURCE_EXHAUSTED) has no public class to catch
        message = str(error).splitlines()[0][:120]
        print(f"| {label} | failed: {type(error).__name__}: {message} |", flush=True)
        results.append({"config": label, "error": message})
        return
    finally:
        gc.collect()  # frees the config's buffers before the next one
    print(f"| {label} | {row['images_per_s']:.2f} | {row['seconds'] * 1e3:.1f} | "
          f"{100 * row['peak_fraction']:.1f}% |", flush=True)
    results.append({"config": label, **row})


def forward_preset(preset, size, settings, peak, deadline, results):
    """Times the forward pass of one preset at every batch size, float32 then bfloat16."""
    for precision in ("float32", "bfloat16"):
        # One model per precision (built once: PSPNet101 takes seconds); jit compiles once per batch.
        model = build_pspnet(preset, input_size=size, precision=precision)
        for batch in settings["forward_batches"]:
            guarded(f"forward {preset}@{size} {precision} batch {batch}",
                    lambda: run_forward(model, batch, settings, peak), deadline, results)
        del model
        keras.backend.clear_session()
        gc.collect()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU check of every path")
    parser.add_argument("--budget_s", type=float, default=420.0,
                        help="stop starting new configs after this many seconds (default 420)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    deadline = time.perf_counter() + args.budget_s
    device = jax.devices()[0]
    peak = bf16_matmul_peak(settings["matmul_size"], settings["min_seconds"])
    print(f"device: {device.device_kind} ({device.platform}, {jax.device_count()} device(s)); "
          f"host {platform.node()}; JAX {jax.__version__}, Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"bf16 matmul peak ({settings['matmul_size']}^3): {peak / 1e12:.2f} TFLOP/s")
    print("| config | images/s | ms per call | of bf16 matmul peak |")
    print("|---|---|---|---|")
    results = []
    # The training step runs right after the first preset (its targets), before the larger presets,
    # so that a budget overrun skips the least needed configs.
    first, *rest = settings["forward"]
    forward_preset(*first, settings, peak, deadline, results)
    preset, size = settings["train"]
    for batch in settings["train_batches"]:
        guarded(f"train step {preset}@{size} bfloat16 aux batch {batch}",
                lambda: run_train(preset, size, batch, settings, peak), deadline, results)
    for preset, size in rest:
        forward_preset(preset, size, settings, peak, deadline, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.device_kind, "bf16_peak_flops": peak, "results": results}, f, indent=1)
    return 1 if any("error" in row for row in results) else 0


if __name__ == "__main__":
    sys.exit(main())
