"""`python -m psp_tf.predict`: segment images with the author's protocol; colour masks and overlays.

    python -m psp_tf.predict --weights converted/pspnet50_ade20k --input photo.jpg --output out/ \
        [--scales 1.0|ms|0.5,1.0] [--noflip] [--overlay] [--batch_size N] [--precision float32|bfloat16]

For every image `<stem>.<ext>` it writes `<stem>.png` (colour mask with the preset's palette),
`<stem>_labels.png` (train ids as grey values) and, with --overlay, `<stem>_overlay.png` (the image under
the mask, with a legend of the classes present). `psp_tf.predict(model, image)` is the library call.

Images are streamed: one is decoded, predicted and written at a time, each output file moved into
--output only once complete. A run that stops (an error, Ctrl-C, a kill) keeps the images it finished;
running the same command again skips every image whose outputs are all present and does the rest
(--overwrite redoes them all). Hidden files (names starting with '.') in an --input directory are skipped.
"""

import os
import stat
import sys

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

import numpy as np

from psp_tf import checks
from psp_tf.data import decode
from psp_tf.errors import ArgumentParser, UserError, exit_on_user_error
from psp_tf.outputs import atomic_file, refuse_overlap, safe_name, sweep
from psp_tf.evaluation.protocol import add_protocol_arguments, parse_scales, predict
from psp_tf.evaluation.report import Progress, encode_png
from psp_tf.visualize import colorize, overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# What each image's outputs are called: <stem><suffix>.png.
OUTPUT_SUFFIXES = {"colour": "", "labels": "_labels", "overlay": "_overlay"}
# The first bytes of every format in IMAGE_EXTENSIONS: a cheap check of all inputs before any output.
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")

__all__ = ["predict", "main"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _require_regular(path):
    """Raises a UserError naming `path` unless it is (a symlink to) a regular file; opens nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:  # a symlink loop (ELOOP), a dangling symlink, no permission
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
        raise UserError(f"--input {path} is {kind}, not an image file")


def list_inputs(path):
    """The image files named by --input (a file, or a directory's images sorted by name).

    Raises:
      UserError: nothing there, no images in the directory, or an entry that is not a regular file
        (a directory or a FIFO named *.jpg, a symlink loop): never opened, so never a hang.
    """
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise UserError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the directory")
    elif not os.path.lexists(path):
        raise UserError(f"--input {path}: no such file or directory")
    else:
        files = [path]
    for f in files:
        _require_regular(f)
    return files


def plan_outputs(files, output_dir, overlay=False):
    """[{kind: path}] per input file: the outputs it gets in `output_dir`.

    Raises:
      UserError: a name that is no plain file name, or two inputs that would write the same output
        (`a.jpg` + `a.png`, or `a.jpg` + `a_labels.jpg`).
    """
    kinds = [k for k in OUTPUT_SUFFIXES if overlay or k != "overlay"]
    writer = {}
    plan = []
    for path in files:
        stem = safe_name(os.path.splitext(os.path.basename(path))[0], f"--input {path}")
        outputs = {k: os.path.join(output_dir, stem + OUTPUT_SUFFIXES[k] + ".png") for k in kinds}
        for out in outputs.values():
            name = os.path.basename(out)
            if name in writer:
                raise UserError(f"--input: {writer[name]} and {path} would both write {name} (outputs are "
                                f"named <name>.png, <name>_labels.png, <name>_overlay.png); rename one")
            writer[name] = path
        plan.append(outputs)
    return plan


def sniff_image(path):
    """Raises a UserError naming `path` unless it starts like an image (reads 12 bytes, never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO swapped in cannot hang us
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"--input {path} is not a regular file")
            head = os.read(fd, 12)
        finally:
            os.close(fd)
    except OSError as e:
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None
    if not (head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        raise UserError(f"{path}: cannot decode image (truncated or not an image)")


def read_image(path):
    """uint8 RGB [H, W, 3] (grey replicated, alpha dropped); UserError naming an undecodable file.

    The decoder of training and evaluation (psp_tf.data.decode): accurate-DCT JPEG, no EXIF rotation.
    """
    return decode.read_image(path, opencv_formats=True)


def parse_args(argv):
    parser = ArgumentParser(prog="python -m psp_tf.predict", description=__doc__.split("\n")[0])
    add_protocol_arguments(parser)
    parser.add_argument("--input", required=True, help="an image or a directory of images")
    parser.add_argument("--output", required=True, type=checks.output_path,
                        help="output directory; a rerun skips the images whose outputs are all there")
    parser.add_argument("--overlay", action="store_true", help="also write overlays with a legend")
    for action in parser._actions:
        if action.dest == "overwrite":
            action.help = "redo every image, replacing outputs already in --output"
    return parser.parse_args(argv)


def _done(outputs):
    """Whether all of an image's outputs are there (each was moved in only once complete)."""
    return all(os.path.isfile(path) for path in outputs.values())


def _write_outputs(outputs, image, labels, config):
    pictures = {"colour": lambda: colorize(labels, config.palette)[..., ::-1],
                "labels": lambda: labels.astype(np.uint8),
                "overlay": lambda: overlay(image, labels, config.palette, config.class_names)[..., ::-1]}
    for kind, path in outputs.items():
        # recover=False: main() swept --output once; a listing per file would be quadratic.
        # follow_symlink=False: a link planted in --output is replaced, never written through.
        with atomic_file(path, overwrite=True, recover=False, follow_symlink=False) as f:
            f.write(encode_png(pictures[kind](), path))


@exit_on_user_error
def main(argv=None):
    from psp_tf.model_dir import load_model

    args = parse_args(sys.argv[1:] if argv is None else argv)
    scales = parse_scales(args.scales)
    refuse_overlap([("--output", args.output)], [("--input", args.input), ("--weights", args.weights)])
    if os.path.lexists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"--output {args.output} exists and is not a directory")
    files = list_inputs(args.input)
    plan = plan_outputs(files, args.output, args.overlay)
    for path in files:
        sniff_image(path)  # fail on a bad file before any output, without holding decoded images
    todo = [(path, outputs) for path, outputs in zip(files, plan) if args.overwrite or not _done(outputs)]
    if len(todo) < len(files):
        print(f"{len(files) - len(todo)} of {len(files)} image(s) already done in {args.output}: skipped "
              f"(--overwrite redoes them)")
    if not todo:
        return
    model = load_model(args.weights, precision=args.precision)
    sweep(args.output)  # what a killed run left there
    progress = Progress() if sys.stderr.isatty() else None
    for k, (path, outputs) in enumerate(todo):
        image = read_image(path)
        # Labels only: the full-size [H, W, K] probabilities (7.2 GB for a 12-megapixel ADE20K photo)
        # are never needed here, and the strips of the protocol never hold them.
        result = predict(model, image, scales=scales, flip=not args.noflip, batch_size=args.batch_size,
                         probabilities=False)
        _write_outputs(outputs, image, result.labels, model.psp_config)
        print(f"{path}: {image.shape[0]}x{image.shape[1]}, classes {[int(v) for v in np.unique(result.labels)]}")
        if progress:
            progress(k + 1, len(todo))
    print(f"{len(todo)} image(s) written to {args.output}")


class _CallableModule(type(sys)):
    """`psp_tf.predict(model, image)` is the issue's library call, but importing this module makes
    `psp_tf.predict` the module: calling the module therefore calls the function."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
