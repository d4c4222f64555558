"""Start-up cost every tool pays before its first op: importing ml_dtypes, TensorFlow and Keras.

Each statement runs in fresh interpreters (the median of --repeats is printed, with the ml_dtypes
version that process imported). `--prepend DIR` puts an unpacked wheel first on the path to compare
another version of a dependency in the same run, e.g. ml_dtypes 0.7.0 against the installed one:

    python -m zipfile -e ml_dtypes-0.7.0-cp311-*.whl /tmp/ml_dtypes_070
    python benchmarks/startup_benchmark.py --prepend /tmp/ml_dtypes_070 [--repeats 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

STATEMENTS = ("import ml_dtypes", "import tensorflow", "import tensorflow, keras")
REPORT = "; import ml_dtypes; print(ml_dtypes.__version__)"


def _time(statement, path, repeats):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
    times, version = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", statement + REPORT], env=env, capture_output=True,
                              text=True, check=True)
        times.append(time.perf_counter() - start)
        version = done.stdout.split()[-1]
    return statistics.median(times), version


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prepend", action="append", default=[],
                        help="a directory put first on PYTHONPATH for a second set of timings (repeatable)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeats} fresh processes")
    for path in [None, *args.prepend]:
        for statement in STATEMENTS:
            seconds, version = _time(statement, path, args.repeats)
            print(f"{statement:28s} {seconds:6.2f} s  (ml_dtypes {version}{', ' + path if path else ''})")


if __name__ == "__main__":
    main()
