#!/bin/sh
# Runs benchmarks/accelerator_benchmark.py on a machine with JAX but no Keras and no package registry.
#
#   sh benchmarks/accelerator_benchmark.sh fetch       # here, with PyPI: fill benchmarks/wheels/ (~6 MB)
#   sh benchmarks/accelerator_benchmark.sh [--quick]   # there: install from those wheels, then run
#
# The wheels are not committed (benchmarks/wheels/ is git-ignored): fetch them, then carry that folder
# with the tree. Only Keras' import-time needs are installed (h5py is imported only to save .h5 files,
# ml_dtypes and numpy come with JAX); optree is compiled, so its wheel is fetched for CPython 3.10-3.13.
# They are unpacked into a private folder put first on PYTHONPATH: nothing of the machine's Python changes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
wheels="$here/wheels"
pure="keras==3.15.1 absl-py==2.5.1 rich==15.0.0 markdown-it-py mdurl pygments namex==0.1.0 packaging typing-extensions"

if [ "${1:-}" = fetch ]; then
    python -m pip download --quiet --no-deps --dest "$wheels" $pure
    for version in 3.10 3.11 3.12 3.13; do
        python -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
            --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --python-version "$version" --dest "$wheels" optree==0.20.0
    done
    ls -l "$wheels"
    exit 0
fi

deps="${TMPDIR:-/tmp}/psp_tf_accelerator_deps"
if ! PYTHONPATH="$deps" python -c "import keras" 2>/dev/null; then
    # Unpacked with zipfile rather than pip: a wheel is a zip of the installed tree, and this needs
    # no pip on the machine. optree is the one compiled wheel: take the one for this CPython.
    tag=$(python -c "import sys; print('cp%d%d' % sys.version_info[:2])")
    for wheel in "$wheels"/*-py3-none-any.whl "$wheels"/optree-*-"$tag"-"$tag"-*.whl; do
        [ -f "$wheel" ] || { echo "error: no wheel $wheel (run: sh $0 fetch)" >&2; exit 2; }
        python -m zipfile -e "$wheel" "$deps"
    done
fi
PYTHONPATH="$deps:$here/..${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax \
    exec python "$here/accelerator_benchmark.py" "$@"
