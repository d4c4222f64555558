"""CPU inference time of the released PSPNets at their crop, batch 1: Keras float32 (plain and with
XLA, `jit_compile=True`), Keras bfloat16 and the same network in PyTorch, side by side in one process (docs/performance.md: compare
only ratios within one run).

    python benchmarks/inference_benchmark.py [--presets pspnet50_ade20k,...] [--repeats 3] [--no-torch]
    python benchmarks/inference_benchmark.py --train [--presets pspnet50_ade20k] [--batch 2] [--repeats 2]

Prints one markdown row per preset. `--train` times a training step instead (aux head, batch 2 at the
crop: forward, CE(main) + 0.4·CE(aux), backward, SGD with momentum): Keras in a `tf.function`, the same
step XLA-compiled (`jit_compile=True`), and the same step of the PyTorch twin (BN in training mode). Weights are random (He init, randomised BN statistics): speed does
not depend on their values. The PyTorch net is built from the Keras model's own weights and its logits
are checked against Keras's, so both sides time the same function.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from psp_tf import build_pspnet, conv_macs  # noqa: E402


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def median_time(fn, repeats):
    fn()  # warm-up: tracing, oneDNN primitive creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peak_gflops(n=4096, repeats=5):
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    step = tf.function(lambda: tf.matmul(a, b))
    seconds = median_time(lambda: step().numpy(), repeats)
    return 2 * n ** 3 / seconds / 1e9


def randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.8, 1.2, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(0.5, 1.5, c)])


def test_image(size, seed=0):
    """A smooth, structured RGB image (gradients + blobs), so that logits vary spatially."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    channels = [np.sin(6 * xx + p) * np.cos(4 * yy - p) for p in rng.uniform(0, 3, 3)]
    image = 127.5 + 100 * np.stack(channels, -1) + rng.normal(0, 5, (*size, 3))
    return np.clip(image, 0, 255).astype(np.float32)[None]


def torch_twin(model):
    """The same PSPNet in PyTorch (eval mode, NCHW), built layer by layer from the Keras model."""
    import torch
    import torch.nn.functional as F

    def conv(x, name, relu=True):
        layer = model.get_layer(name)
        kernel = torch.from_numpy(np.ascontiguousarray(layer.kernel.numpy().transpose(3, 2, 0, 1)))
        bias = torch.from_numpy(layer.bias.numpy()) if layer.use_bias else None
        d = layer.dilation_rate[0]
        pad = d * (layer.kernel_size[0] - 1) // 2
        x = F.conv2d(x, kernel, bias, layer.strides[0], pad, d)
        if name + "_bn" in names:
            g, b, m, v = [torch.from_numpy(w.numpy()) for w in model.get_layer(name + "_bn").weights]
            x = F.batch_norm(x, m, v, g, b, False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    names = {layer.name for layer in model.layers}
    config = model.psp_config
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    size = tuple(config.crop_size)

    def forward(x):
        x = x - mean
        for name in ("conv1_1_3x3_s2", "conv1_2_3x3", "conv1_3_3x3"):
            x = conv(x, name)
        x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        for stage, blocks in enumerate(config.stage_blocks, start=2):
            for block in range(1, blocks + 1):
                p = f"conv{stage}_{block}"
                shortcut = conv(x, p + "_1x1_proj", relu=False) if block == 1 else x
                y = conv(conv(conv(x, p + "_1x1_reduce"), p + "_3x3"), p + "_1x1_increase", relu=False)
                x = F.relu(shortcut + y)
        f = x.shape[-2:]
        branches = [x]
        for bins in sorted(config.bins, reverse=True):
            y = F.avg_pool2d(x, (f[0] // bins, f[1] // bins))
            y = conv(y, f"conv5_3_pool{bins}_conv")
            branches.append(F.interpolate(y, size=f, mode="bilinear", align_corners=True))
        x = conv(torch.cat(branches, 1), "conv5_4")
        x = conv(x, "conv6", relu=False)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    return forward


def bench_preset(preset, repeats, with_torch):
    model = build_pspnet(preset)
    randomize_bn(model)
    size = tuple(model.psp_config.crop_size)
    image = test_image(size)
    f32 = tf.function(lambda x: model(x, training=False))
    logits32 = f32(image).numpy()
    row = {"preset": preset, "crop": size[0], "gmacs": conv_macs(model) / 1e9,
           "keras_f32": median_time(lambda: f32(image).numpy(), repeats)}
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    row["keras_f32_xla"] = median_time(lambda: xla(image).numpy(), repeats)

    bf16_model = build_pspnet(preset, precision="bfloat16")
    bf16_model.set_weights(model.get_weights())
    bf16 = tf.function(lambda x: bf16_model(x, training=False))
    row["keras_bf16"] = median_time(lambda: bf16(image).numpy(), repeats)
    row["bf16_agreement"] = float((bf16(image).numpy().argmax(-1) == logits32.argmax(-1)).mean())

    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count())
        forward = torch_twin(model)
        x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            torch_logits = forward(x).numpy().transpose(0, 2, 3, 1)
            row["torch_max_diff"] = float(np.abs(torch_logits - logits32).max() / logits32.std())
            row["torch_f32"] = median_time(lambda: forward(x), repeats)
    return row


AUX_WEIGHT = 0.4


def keras_train_steps(model):
    """(plain, XLA) tf.functions of one SGD step of `model` (aux head) on (images, labels)."""
    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(images, labels):
        with tf.GradientTape() as tape:
            main, aux = model(images, training=True)
            loss = loss_fn(labels, main) + AUX_WEIGHT * loss_fn(labels, aux)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss
    return tf.function(step), tf.function(step, jit_compile=True)


def torch_train_step(model):
    """One SGD step of the PyTorch twin of `model` (aux head; BN in training mode, Caffe momentum)."""
    import torch
    import torch.nn.functional as F

    names = {layer.name for layer in model.layers}
    params, stats = {}, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            params[layer.name] = [torch.tensor(layer.kernel.numpy().transpose(3, 2, 0, 1), requires_grad=True)]
            if layer.use_bias:
                params[layer.name].append(torch.tensor(layer.bias.numpy(), requires_grad=True))
        elif isinstance(layer, keras.layers.BatchNormalization):
            params[layer.name] = [torch.tensor(layer.gamma.numpy(), requires_grad=True),
                                  torch.tensor(layer.beta.numpy(), requires_grad=True)]
            stats[layer.name] = [torch.tensor(layer.moving_mean.numpy()), torch.tensor(layer.moving_variance.numpy())]

    def conv(x, name, relu=True):
        layer = model.get_layer(name)
        d = layer.dilation_rate[0]
        bias = params[name][1] if layer.use_bias else None
        x = F.conv2d(x, params[name][0], bias, layer.strides[0], d * (layer.kernel_size[0] - 1) // 2, d)
        if name + "_bn" in names:
            gamma, beta = params[name + "_bn"]
            mean, var = stats[name + "_bn"]
            x = F.batch_norm(x, mean, var, gamma, beta, True, 0.05, 1e-5)
        return F.relu(x) if relu else x

    config = model.psp_config
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    size = tuple(config.crop_size)

    def forward(x):
        x = x - mean
        for name in ("conv1_1_3x3_s2", "conv1_2_3x3", "conv1_3_3x3"):
            x = conv(x, name)
        x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        for stage, blocks in enumerate(config.stage_blocks, start=2):
            for block in range(1, blocks + 1):
                p = f"conv{stage}_{block}"
                shortcut = conv(x, p + "_1x1_proj", relu=False) if block == 1 else x
                y = conv(conv(conv(x, p + "_1x1_reduce"), p + "_3x3"), p + "_1x1_increase", relu=False)
                x = F.relu(shortcut + y)
            if stage == 4:
                aux = F.dropout(conv(x, "conv4_aux"), config.dropout, True)
                aux = F.interpolate(conv(aux, "conv6_aux", relu=False), size=size, mode="bilinear",
                                    align_corners=True)
        f = x.shape[-2:]
        branches = [x]
        for bins in sorted(config.bins, reverse=True):
            y = conv(F.avg_pool2d(x, (f[0] // bins, f[1] // bins)), f"conv5_3_pool{bins}_conv")
            branches.append(F.interpolate(y, size=f, mode="bilinear", align_corners=True))
        x = F.dropout(conv(torch.cat(branches, 1), "conv5_4"), config.dropout, True)
        main = F.interpolate(conv(x, "conv6", relu=False), size=size, mode="bilinear", align_corners=True)
        return main, aux

    optimizer = torch.optim.SGD([p for group in params.values() for p in group], lr=1e-3, momentum=0.9)

    def step(images, labels):
        optimizer.zero_grad()
        main, aux = forward(images)
        loss = F.cross_entropy(main, labels) + AUX_WEIGHT * F.cross_entropy(aux, labels)
        loss.backward()
        optimizer.step()
        return loss
    return step


def bench_train(preset, batch, repeats, with_torch):
    model = build_pspnet(preset, aux_head=True)
    randomize_bn(model)
    size = tuple(model.psp_config.crop_size)
    images = np.concatenate([test_image(size, seed) for seed in range(batch)])
    labels = np.random.default_rng(0).integers(0, model.psp_config.num_classes, (batch, *size))
    row = {"preset": preset, "batch": batch}
    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count())
        # Before Keras trains the weights: both sides start from the same network.
        step = torch_train_step(model)
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        y = torch.from_numpy(labels)
        row["torch"] = median_time(lambda: float(step(x, y).detach()), repeats)
    plain, xla = keras_train_steps(model)
    labels = labels.astype(np.int32)
    row["keras"] = median_time(lambda: float(plain(images, labels)), repeats)
    row["keras_xla"] = median_time(lambda: float(xla(images, labels)), repeats)
    return row


def main_train(args, with_torch):
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; TF {tf.__version__}, Keras {keras.__version__}; "
          f"training step, aux head, batch {args.batch} at the crop, median of {args.repeats} after a warm-up")
    print("| preset | Keras img/s | Keras + XLA img/s | XLA speed-up | PyTorch img/s | Keras + XLA vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        r = bench_train(preset, args.batch, args.repeats, with_torch)
        torch_cols = (f"{args.batch / r['torch']:.3f} | {r['torch'] / r['keras_xla']:.2f}× |" if with_torch
                      else "– | – |")
        print(f"| {preset} | {args.batch / r['keras']:.3f} | {args.batch / r['keras_xla']:.3f} | "
              f"{r['keras'] / r['keras_xla']:.2f}× | {torch_cols}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="pspnet50_ade20k,pspnet101_voc2012,pspnet101_cityscapes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    parser.add_argument("--train", action="store_true", help="time a training step instead of inference")
    parser.add_argument("--batch", type=int, default=2, help="--train: the batch size")
    args = parser.parse_args()
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed (pip install torch); timing Keras only")
            with_torch = False
    if args.train:
        return main_train(args, with_torch)
    peak = matmul_peak_gflops()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; TF {tf.__version__}, Keras {keras.__version__}; "
          f"float32 matmul peak {peak:.0f} GFLOP/s")
    print("| preset | crop | GMACs | Keras f32 s | % of peak | Keras f32 + XLA s | PyTorch f32 s | Keras bf16 s "
          "| bf16 speed-up | bf16 argmax agreement | max abs Δ torch vs keras / std |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        r = bench_preset(preset, args.repeats, with_torch)
        efficiency = 2 * r["gmacs"] / r["keras_f32"] / peak * 100
        torch_cols = (f"{r['torch_f32']:.2f} | " if with_torch else "– | ")
        print(f"| {preset} | {r['crop']} | {r['gmacs']:.1f} | {r['keras_f32']:.2f} | {efficiency:.0f}% | "
              f"{r['keras_f32_xla']:.2f} | {torch_cols}{r['keras_bf16']:.2f} | {r['keras_f32'] / r['keras_bf16']:.2f}× | "
              f"{100 * r['bf16_agreement']:.2f}% | {r.get('torch_max_diff', float('nan')):.1e} |", flush=True)


if __name__ == "__main__":
    main()
