"""`python -m psp_tf.export`: a SavedModel that runs the author's whole test protocol in the graph.

    python -m psp_tf.export --weights converted/pspnet50_ade20k --output exported/pspnet50_ade20k \
        [--scales 1.0|ms|0.5,1.0] [--noflip] [--batch_size N] [--precision float32|bfloat16] [--overwrite]

The serving signature takes one uint8 image [H, W, C] of any size (C = 3; grey C = 1 is replicated)
and returns `labels` int32 [H, W] (train ids) and `probabilities` float32 [H, W, K]: MATLAB resize,
padding, tiling, flip, blending and scales all happen inside the SavedModel, so a serving system needs
no Python. `psp_tf.json` beside it records the class names, palette and protocol settings.
"""

import dataclasses
import json
import os
import sys

from psp_tf.startup import import_tensorflow_quietly

if __name__ == "__main__":  # a tool's start stays quiet; a bad input ends in one error line
    import_tensorflow_quietly()

import keras
import tensorflow as tf

from psp_tf import checks
from psp_tf.errors import ArgumentParser, exit_on_user_error
from psp_tf.outputs import atomic_directory, refuse_overlap
from psp_tf.evaluation import protocol

METADATA_FILE = "psp_tf.json"


def export(model, directory, settings):
    """Writes the protocol for `model` under `settings` as a SavedModel to `directory` (must not exist).

    Args:
      model: a PSPNet (psp_tf.build_pspnet / load_model).
      directory: output path.
      settings: protocol.ProtocolSettings.
    """
    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name="image")])
    def serve(image):
        (labels, probabilities), = protocol.protocol_graph(model, [protocol.as_rgb(image)], settings)
        return {"labels": labels, "probabilities": probabilities}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(directory, verbose=False)
    config = model.psp_config
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump({"preset": config.name, "class_names": list(config.class_names),
                   "palette": [list(c) for c in config.palette],
                   "protocol": dataclasses.asdict(settings),
                   "signature": "serve(image uint8 [H, W, C]) -> {labels int32 [H, W], "
                                "probabilities float32 [H, W, K]}"}, f, indent=2)


def parse_args(argv):
    parser = ArgumentParser(prog="python -m psp_tf.export", description=__doc__.split("\n")[0])
    protocol.add_protocol_arguments(parser)
    parser.add_argument("--output", required=True, type=checks.output_path,
                        help="SavedModel directory (written atomically)")
    return parser.parse_args(argv)



@exit_on_user_error
def main(argv=None):
    from psp_tf.model_dir import load_model

    args = parse_args(sys.argv[1:] if argv is None else argv)
    refuse_overlap([("--output", args.output)], [("--weights", args.weights)])
    model = load_model(args.weights, precision=args.precision)
    settings = protocol.settings_for(model, protocol.parse_scales(args.scales), not args.noflip,
                                     batch_size=args.batch_size)
    with atomic_directory(args.output, args.overwrite, flag="--output") as tmp:
        os.rmdir(tmp)  # ExportArchive creates the directory itself
        export(model, tmp, settings)
    print(f"SavedModel written to {args.output}: serve(image uint8 [H, W, C]) -> labels, probabilities")


if __name__ == "__main__":
    main()
