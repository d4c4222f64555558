"""Evaluation benchmark: protocol overhead, network throughput vs matmul peak, peak memory, bf16, ETA.

    python benchmarks/eval_benchmark.py --part overhead   # PSPNet50 @473, two 384x512 images (1x2 tiles)
    python benchmarks/eval_benchmark.py --part host       # the host work of one such image, per stage
    python benchmarks/eval_benchmark.py --part memory     # PSPNet101 @713, one 1024x2048 image, ss
    python benchmarks/eval_benchmark.py --part bf16 [--weights DIR]  # PSPNet50 @473: bf16 vs f32
    python benchmarks/eval_benchmark.py --part eta        # full-val time estimate per preset

Random weights (timing does not depend on their values). Prints one JSON line per part. Each part takes
minutes on 2 cores; run one at a time on an idle machine. Like the tools (psp_tf.startup), the benchmark
keeps freed memory in the heap (`--malloc keep`); `--malloc glibc` leaves glibc's defaults, which give
each block over 32 MB a fresh mmap (the allocator is per process: compare two runs, one after the other).
"""

import argparse
import dataclasses
import json
import os
import resource
import time

import numpy as np
import tensorflow as tf

import psp_tf
from psp_tf import startup
from psp_tf.evaluation import protocol, resize, sliding_window, stream, tile_step


def matmul_peak(n=2048, repeats=10):
    """float32 GFLOP/s of an n x n matmul (the machine's practical sgemm peak)."""
    a = tf.random.normal([n, n])
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def timed(fn, repeats):
    fn()  # trace / warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[..., None] / 37.0) * np.cos(yy[..., None] / 23.0)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def network_tiles(model, img, settings):
    """The tiles the protocol cuts from `img` at scale 1 (before their mirror images are added)."""
    config = model.psp_config
    h, w = resize.scaled_size(img.shape[0], img.shape[1], config.base_size + 1)
    tiles, _ = sliding_window.make_tiles(resize.imresize(tf.constant(img), h, w), settings.crop_size,
                                         settings.mean)
    return tiles.numpy()


def part_overhead(args):
    """The previous default path (the whole protocol as one traced graph, network uncompiled, as
    evaluate ran it before the device step) against today's default, the streamed protocol around the
    device step, and that step alone on the very tiles: speed-up and protocol overhead, in one run.
    The step is XLA-compiled where evaluate.py compiles it by default (a GPU or TPU visible; on a CPU
    it is a plain tf.function): `step_compiled` in the output says which was measured."""
    model = psp_tf.build_pspnet("pspnet50_ade20k")
    images = [image(384, 512, seed=0), image(384, 512, seed=1)]
    settings = protocol.settings_for(model, batch_size=args.batch_size)
    spec = [tf.TensorSpec([None, None, 3], tf.uint8)]
    graph = tf.function(lambda im: protocol.protocol_graph(model, [im], settings, probabilities=False)[0][0],
                        input_signature=spec, autograph=False)
    step = stream.Engine(model, settings).step
    tiles = np.concatenate([network_tiles(model, img, settings) for img in images])
    batches = [tiles[i:i + step.batch] for i in range(0, len(tiles), step.batch)]
    run_old = lambda: [graph(tf.constant(img)).numpy() for img in images]
    run_new = lambda: protocol.predict(model, images, batch_size=args.batch_size, probabilities=False)
    run_net = lambda: [step(b) for b in batches]
    # The other kind of step on the same tiles (XLA where the default is plain, and the reverse).
    other = not settings.compiled
    other_step = stream.Engine(model, dataclasses.replace(settings, compiled=other)).step
    run_other_new = lambda: protocol.predict(model, images, batch_size=args.batch_size, probabilities=False,
                                             compiled=other)
    run_other_net = lambda: [other_step(b) for b in batches]
    plain = protocol.network_function(model)  # today's network: a plain tf.function, no XLA
    run_plain = lambda: [plain(tile_step.with_mirrors(tf.constant(b))).numpy() for b in batches]
    compile_s = _once(run_net)
    run_old(), run_new(), run_plain(), run_other_new(), run_other_net()  # trace
    runs = {"old": run_old, "new": run_new, "net": run_net, "plain": run_plain, "other_new": run_other_new,
            "other_net": run_other_net}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):  # interleaved, best of n: other load on the machine hits all alike
        for key, run in runs.items():
            best[key] = min(best[key], _once(run))
    t_old, t_new, t_net, t_plain = best["old"], best["new"], best["net"], best["plain"]
    kind = "xla" if other else "plain"
    peak = matmul_peak()
    flops = 2.0 * psp_tf.conv_macs(model) * len(tiles) * 2
    return {"part": "overhead", "preset": "pspnet50_ade20k", "images": "2 x 384x512 (385x513, 1x2 tiles, flip)",
            "tiles": len(tiles), "batch_size": args.batch_size, "step_compiled": settings.compiled,
            "first_step_call_s": round(compile_s, 1), "previous_default_s": round(t_old, 3),
            "streamed_default_s": round(t_new, 3), "device_step_s": round(t_net, 3),
            "plain_network_s": round(t_plain, 3), "step_vs_plain_network": round(t_plain / t_net, 3),
            "speedup_vs_previous": round(t_old / t_new, 3), "overhead": round(t_new / t_net, 3),
            f"streamed_{kind}_step_s": round(best["other_new"], 3), f"{kind}_step_alone_s": round(best["other_net"], 3),
            f"speedup_{kind}_vs_previous": round(t_old / best["other_new"], 3),
            "network_gflops": round(flops / t_net / 1e9, 1), "matmul_peak_gflops": round(peak, 1),
            "fraction_of_peak": round(flops / t_net / 1e9 / peak, 3)}


def part_host(args):
    """The streamed protocol's host work for one 384x512 ADE20K image (K = 150, single scale, flip): the
    uint8 resize and tiling, the blend of its two tiles, the full-size stage (labels only, and with the
    probabilities), and inside the latter one float resize, renormalisation and argmax of the whole map.
    Stand-in probabilities (timing does not depend on their values); no network."""
    k, h, w = 150, 384, 512
    settings = protocol.ProtocolSettings(crop_size=(473, 473))
    img = image(h, w)
    rng = np.random.default_rng(0)
    score = rng.random((h + 1, w + 1, k)).astype(np.float32)  # the blended map at the scaled size 385x513
    score /= score.sum(-1, keepdims=True)
    tile = rng.random((473, 473, k)).astype(np.float32)
    tiles = stream.tile_function(settings)

    def blend():
        state = stream._Blend(np.array([0]), np.array([0, 40]), (h + 1, w + 1), settings.crop_size, k)
        state.add(0, tile)
        state.add(1, tile)
        state.finish()

    labels = stream.full_size_function(1, k, False)
    both = stream.full_size_function(1, k, True)
    float_resize = tf.function(lambda x: resize.imresize(x, h, w), autograph=False)
    resized = float_resize(score)
    renormalise = tf.function(lambda x: x / tf.reduce_sum(x, axis=-1, keepdims=True))
    argmax = tf.function(lambda x: tf.argmax(x, axis=-1, output_type=tf.int32))
    stages = {"tiles_uint8_resize_s": lambda: [t.numpy() for t in tiles(img, np.float32(w + 1))],
              "blend_2_tiles_s": blend,
              "full_size_labels_s": lambda: [t.numpy() for t in labels([score], h, w)],
              "full_size_with_probabilities_s": lambda: [t.numpy() for t in both([score], h, w)],
              "of_which_float_resize_s": lambda: float_resize(score).numpy(),
              "of_which_renormalise_s": lambda: renormalise(resized).numpy(),
              "of_which_argmax_s": lambda: argmax(resized).numpy()}
    result = {"part": "host", "image": "384x512 (scores 385x513, K=150, ss)"}
    for name, fn in stages.items():
        result[name] = round(timed(fn, args.repeats), 3)
    return result


def part_memory(args):
    model = psp_tf.build_pspnet("pspnet101_cityscapes")
    img = image(1024, 2048)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    start = time.perf_counter()
    protocol.predict(model, img, batch_size=args.batch_size, probabilities=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GiB (approx. GB)
    return {"part": "memory", "preset": "pspnet101_cityscapes", "image": "1024x2048 (1025x2049, 2x4 tiles, flip)",
            "batch_size": args.batch_size, "peak_rss_gb": round(peak, 2), "rss_before_gb": round(before, 2),
            "seconds_incl_trace": round(seconds, 1)}


def part_bf16(args):
    if args.weights:  # e.g. a converted synthetic caffemodel: realistic activation scales
        from psp_tf.model_dir import load_model
        f32 = load_model(args.weights)
    else:
        f32 = psp_tf.build_pspnet("pspnet50_ade20k")
    bf16 = protocol.with_precision(f32, "bfloat16")
    img = image(384, 512, seed=1)
    results = {}
    for name, model in (("float32", f32), ("bfloat16", bf16)):
        fn = lambda: protocol.predict(model, img, batch_size=args.batch_size)
        results[name] = fn()
        results[name + "_s"] = timed(fn, args.repeats)
    agree = float(np.mean(results["float32"].labels == results["bfloat16"].labels))
    dprob = float(np.abs(results["float32"].probabilities - results["bfloat16"].probabilities).max())
    return {"part": "bf16", "preset": f32.psp_config.name, "weights": args.weights or "random init",
            "image": "384x512",
            "float32_s": round(results["float32_s"], 3), "bfloat16_s": round(results["bfloat16_s"], 3),
            "speedup": round(results["float32_s"] / results["bfloat16_s"], 2), "argmax_agreement": agree,
            "max_abs_dprob": dprob}


def tile_count(h, w, scale, base, crop):
    """Network forward passes (tiles x 2 for flip) of one image at one scale under the protocol."""
    nh, nw = (int(v) for v in resize.scaled_size(h, w, base * scale + 1))
    stride = -(-crop * 2 // 3)
    grid = lambda n: 1 if n <= crop else -(-(n - crop) // stride) + 1
    return 2 * grid(max(nh, crop)) * grid(max(nw, crop))


def part_eta(args):
    """Per-forward time of each preset's network (batch 2) x forwards per image of a typical image."""
    typical = {"pspnet50_ade20k": ((384, 512), 2000), "pspnet101_voc2012": ((375, 500), 1449),
               "pspnet101_cityscapes": ((1024, 2048), 500)}
    rows = []
    for name, ((h, w), count) in typical.items():
        model = psp_tf.build_pspnet(name)
        crop = model.psp_config.crop_size[0]
        net = tf.function(lambda x: model(x, training=False))
        x = tf.random.uniform([2, crop, crop, 3], 0, 255)
        per_forward = timed(lambda: net(x).numpy(), args.repeats) / 2
        base = model.psp_config.base_size
        ss = tile_count(h, w, 1.0, base, crop)
        ms = sum(tile_count(h, w, s, base, crop) for s in protocol.MULTI_SCALES)
        rows.append({"preset": name, "typical_image": f"{h}x{w}", "val_images": count,
                     "s_per_forward": round(per_forward, 2), "forwards_ss": ss, "forwards_ms": ms,
                     "est_hours_ss": round(count * ss * per_forward * 1.05 / 3600, 1),
                     "est_hours_ms": round(count * ms * per_forward * 1.05 / 3600, 1)})
    return {"part": "eta", "note": "x1.05 protocol overhead; ADE/VOC images vary in size", "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("overhead", "host", "memory", "bf16", "eta"), required=True)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights", help="bf16 part: a psp_tf weights directory instead of random init")
    parser.add_argument("--malloc", choices=("keep", "glibc"), default="keep",
                        help="keep: freed memory stays in the heap, as in the tools; glibc: its defaults")
    args = parser.parse_args()
    kept = args.malloc == "keep" and startup.keep_freed_memory()
    part = {"overhead": part_overhead, "host": part_host, "memory": part_memory, "bf16": part_bf16, "eta": part_eta}[args.part]
    result = part(args)
    result["cpu"] = _cpu_name()
    result["malloc"] = "keep freed memory" if kept else "glibc defaults"
    print(json.dumps(result))


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
