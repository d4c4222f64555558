"""Where bfloat16 disagrees with float32, and what keeping layer groups in float32 buys and costs.

    python benchmarks/precision_benchmark.py [--preset pspnet50_ade20k] [--part attribution|speed|all]
        [--groups stem,conv2,conv3,pyramid] [--repeats 3]

The network is the preset with converted synthetic weights (a synthetic caffemodel of the author's
layer list, psp_tf.convert.synthetic, loaded by name), on two smooth structured 473x473 test images.
- attribution: argmax agreement with float32 and the logits' max/rms error (/ std) for all-bfloat16,
  for each group alone in bfloat16 (the rest float32: what that group's rounding costs) and for each
  group alone in float32 (the rest bfloat16: what keeping it buys), plus each group's share of the
  multiply-accumulates.
- speed: seconds per batch-1 forward of float32, all-bfloat16 and bfloat16 with --groups in float32,
  timed in rounds that alternate the three (a shared machine's load then hits all alike; compare the
  ratios). No figure here is asserted by a test.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from inference_benchmark import cpu_name, test_image  # noqa: E402
from psp_tf import build_pspnet, precision  # noqa: E402
from psp_tf.convert import loader, synthetic  # noqa: E402

PROTOTXTS = {"pspnet50_ade20k": "pspnet50_ADE20K_473.prototxt",
             "pspnet101_voc2012": "pspnet101_VOC2012_473.prototxt",
             "pspnet101_cityscapes": "pspnet101_cityscapes_713.prototxt"}


def converted_pair(preset, workdir):
    """(float32 model, bfloat16 model) holding the same converted synthetic weights."""
    path = synthetic.write_caffemodel(os.path.join(workdir, f"{preset}.caffemodel"), PROTOTXTS[preset], seed=1)
    model32 = build_pspnet(preset)
    loader.load_caffe_weights(model32, path)
    model16 = build_pspnet(preset, precision="bfloat16")
    model16.set_weights(model32.get_weights())
    return model32, model16


def group_macs(model):
    """Share of the convolutions' multiply-accumulates per precision group."""
    macs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            group = precision.layer_group(layer.name)
            macs[group] = macs.get(group, 0) + height * width * kh * kw * cin * cout
    total = sum(macs.values())
    return {group: count / total for group, count in macs.items()}


def compare(model, images, reference):
    logits = model.predict(images, batch_size=1, verbose=0)
    error = logits - reference
    return {"agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
            "max_error": float(np.abs(error).max() / reference.std()),
            "rms_error": float(np.sqrt(np.mean(error ** 2)) / reference.std())}


def part_attribution(model32, model16, images):
    reference = model32.predict(images, batch_size=1, verbose=0)
    top2 = np.sort(reference, -1)[..., -2:]
    gap = (top2[..., 1] - top2[..., 0]) / reference.std()
    print(f"float32 logits: std {reference.std():.3f}; median top-2 gap {np.median(gap):.3f} std; "
          f"{100 * np.mean(gap < 0.01):.1f}% of pixels within 0.01 std")
    shares = group_macs(model32)
    groups = [g for g in precision.GROUP_NAMES if g in shares and g != "classifier"]
    print("| bfloat16 in | float32 in | MACs in bf16 | argmax agreement | max |Δ|/std | rms Δ/std |")
    print("|---|---|---|---|---|---|")
    rows = [("all", "–", set(groups))]
    rows += [(g, "the rest", {g}) for g in groups]
    rows += [("the rest", g, set(groups) - {g}) for g in groups]
    for low, high, in_bf16 in rows:
        model = precision.with_float32(model16, set(precision.GROUP_NAMES) - in_bf16)
        r = compare(model, images, reference)
        share = sum(shares[g] for g in in_bf16)
        print(f"| {low} | {high} | {100 * share:.1f}% | {100 * r['agreement']:.2f}% | {r['max_error']:.4f} | "
              f"{r['rms_error']:.5f} |", flush=True)


def part_speed(model32, model16, images, groups, repeats):
    variants = {"float32": model32, "bfloat16": model16,
                f"bfloat16, {'+'.join(groups)} in float32": precision.with_float32(model16, groups)}
    reference = model32.predict(images, batch_size=1, verbose=0)
    functions = {name: tf.function(lambda x, m=m: m(x, training=False)) for name, m in variants.items()}
    one = images[:1]
    for fn in functions.values():
        fn(one).numpy()  # tracing, oneDNN primitive creation
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn(one).numpy()
            times[name].append(time.perf_counter() - start)
    print("| variant | s per forward (median) | speed-up vs float32 | argmax agreement |")
    print("|---|---|---|---|")
    base = np.median(times["float32"])
    for name, model in variants.items():
        seconds = np.median(times[name])
        agreement = compare(model, images, reference)["agreement"]
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}× | {100 * agreement:.2f}% |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="pspnet50_ade20k", choices=sorted(PROTOTXTS))
    parser.add_argument("--part", default="all", choices=("attribution", "speed", "all"))
    parser.add_argument("--groups", default="stem,conv2,conv3,pyramid",
                        help="speed part: the groups kept in float32 in the third variant")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; TF {tf.__version__}, Keras {keras.__version__}")
    with tempfile.TemporaryDirectory() as workdir:
        model32, model16 = converted_pair(args.preset, workdir)
    size = tuple(model32.psp_config.crop_size)
    images = np.concatenate([test_image(size, seed=s) for s in (0, 1)])
    if args.part in ("attribution", "all"):
        part_attribution(model32, model16, images)
    if args.part in ("speed", "all"):
        part_speed(model32, model16, images, args.groups.split(","), args.repeats)


if __name__ == "__main__":
    main()
