"""`python -m psp_tf.predict`: segment images with the author's protocol; colour masks and overlays.

    python -m psp_tf.predict --weights converted/pspnet50_ade20k --input photo.jpg --output out/ \
        [--scales 1.0|ms|0.5,1.0] [--noflip] [--overlay] [--batch_size N] [--precision float32|bfloat16]

For every image `<stem>.<ext>` it writes `<stem>.png` (colour mask with the preset's palette),
`<stem>_labels.png` (train ids as grey values) and, with --overlay, `<stem>_overlay.png` (the image under
the mask, with a legend of the classes present). `psp_tf.predict(model, image)` is the library call.
"""

import os
import sys

from psp_tf.errors import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

import cv2
import numpy as np

from psp_tf import checks
from psp_tf.errors import ArgumentParser, UserError, atomic_directory, exit_on_user_error
from psp_tf.evaluation.protocol import add_protocol_arguments, parse_scales, predict
from psp_tf.evaluation.report import write_png
from psp_tf.visualize import colorize, overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["predict", "main"]


def list_inputs(path):
    """The image files named by --input (a file, or a directory's images sorted by name)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise UserError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the directory")
        stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
        clash = sorted({s for s in stems if stems.count(s) > 1})
        if clash:  # outputs are named by stem: a.jpg and a.png would overwrite each other
            raise UserError(f"--input {path}: several images share the name {clash[0]!r} "
                            f"(outputs are named <name>.png)")
        return files
    if not os.path.isfile(path):
        raise UserError(f"--input {path}: no such file or directory")
    return [path]


def read_image(path):
    """uint8 RGB [H, W, 3] (grey replicated, alpha dropped); UserError naming an undecodable file."""
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: cannot decode image (truncated or not an image)")
    return image[..., ::-1].copy()


def parse_args(argv):
    parser = ArgumentParser(prog="python -m psp_tf.predict", description=__doc__.split("\n")[0])
    add_protocol_arguments(parser)
    parser.add_argument("--input", required=True, help="an image or a directory of images")
    parser.add_argument("--output", required=True, type=checks.output_path,
                        help="output directory (written atomically)")
    parser.add_argument("--overlay", action="store_true", help="also write overlays with a legend")
    return parser.parse_args(argv)



@exit_on_user_error
def main(argv=None):
    from psp_tf.load import load_model

    args = parse_args(sys.argv[1:] if argv is None else argv)
    scales = parse_scales(args.scales)
    files = list_inputs(args.input)
    images = [read_image(f) for f in files]  # all decodable before any output is written
    model = load_model(args.weights, precision=args.precision)
    config = model.psp_config
    with atomic_directory(args.output, args.overwrite) as tmp:
        for path, image in zip(files, images):
            result = predict(model, image, scales=scales, flip=not args.noflip, batch_size=args.batch_size)
            stem = os.path.splitext(os.path.basename(path))[0]
            write_png(os.path.join(tmp, stem + ".png"), colorize(result.labels, config.palette)[..., ::-1])
            write_png(os.path.join(tmp, stem + "_labels.png"), result.labels.astype(np.uint8))
            if args.overlay:
                shown = overlay(image, result.labels, config.palette, config.class_names)
                write_png(os.path.join(tmp, stem + "_overlay.png"), shown[..., ::-1])
            print(f"{path}: {image.shape[0]}x{image.shape[1]}, classes {sorted(set(np.unique(result.labels)))}")
    print(f"{len(files)} image(s) written to {args.output}")


class _CallableModule(type(sys)):
    """`psp_tf.predict(model, image)` is the issue's library call, but importing this module makes
    `psp_tf.predict` the module: calling the module therefore calls the function."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
