"""Conversion wall time and peak resident memory for a full-size PSPNet101 caffemodel.

Writes a synthetic caffemodel (the author's layer list, ~263 MB), then runs `python -m convert` in a
fresh process without and with --verify, and reports each run's wall time and peak RSS (from
os.wait4, so one run's peak does not leak into the other's). Targets (issue 3): <= 60 s and
<= 2.5 GB without --verify.

    python benchmarks/convert_benchmark.py [--preset pspnet101_cityscapes] [--workdir /tmp/convert_bench]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from psp_tf.convert import synthetic  # noqa: E402


def run_measured(argv):
    """Runs argv in a child; returns (exit code, wall seconds, peak RSS in GB, last output line)."""
    start = time.time()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = [l for l in output.splitlines() if l and not l[0] in "IWE" and "oneDNN" not in l]
    return process.returncode, wall, usage.ru_maxrss / 1e6, lines  # ru_maxrss is in KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="pspnet101_cityscapes", choices=sorted(synthetic.PRESET_PROTOTXTS))
    parser.add_argument("--workdir", default="/tmp/convert_bench")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    model_file = os.path.join(args.workdir, f"{args.preset}.caffemodel")
    start = time.time()
    synthetic.write_caffemodel(model_file, synthetic.PRESET_PROTOTXTS[args.preset], seed=0)
    print(f"synthetic {model_file}: {os.path.getsize(model_file) / 1e6:.1f} MB in {time.time() - start:.1f} s")
    for label, extra in [("convert", []), ("convert --verify", ["--verify"])]:
        output = os.path.join(args.workdir, "out")
        shutil.rmtree(output, ignore_errors=True)
        code, wall, rss, lines = run_measured([sys.executable, "-m", "convert", "--caffemodel", model_file,
                                               "--output", output, *extra])
        for line in lines:
            if "parity" in line or "error" in line:
                print(f"  {line}")
        print(f"{label:18s} exit {code}  wall {wall:6.1f} s  peak RSS {rss:5.2f} GB")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
