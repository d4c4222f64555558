"""`python -m convert`: the author's .caffemodel -> a psp_tf output directory (checkpoint, weights, config).

    python -m convert --caffemodel pspnet101_cityscapes.caffemodel --output converted/pspnet101_cityscapes \
        [--prototxt F] [--preset NAME] [--verify] [--savedmodel DIR] [--overwrite]

The output directory holds `ckpt.*` (tf.train.Checkpoint of the model), `model.weights.h5` (Keras)
and `config.json`; `psp_tf.load_model(dir)` rebuilds the inference model from it. Bad input ends in
one `error:` line, exit 2, and nothing written; a failed --verify exits 1 and writes nothing.
"""

import dataclasses
import hashlib
import os
import sys
import time

import numpy as np

from psp_tf import convert
from psp_tf.convert import detect, loader, reader, verify
from psp_tf import checks
from psp_tf.errors import ArgumentParser, UserError, exit_on_user_error
from psp_tf.outputs import atomic_directory, refuse_overlap

from psp_tf.model_dir import model_metadata, write_model_dir  # noqa: E402  (one definition of the layout)



def parse_args(argv):
    parser = ArgumentParser(prog="python -m convert", description=__doc__.split("\n")[0])
    parser.add_argument("--caffemodel", required=True, help="the .caffemodel to convert")
    parser.add_argument("--output", required=True, type=checks.output_path,
                        help="output directory (written atomically)")
    parser.add_argument("--prototxt", help="deploy prototxt: checked against the file; --verify runs its layer list")
    parser.add_argument("--preset", help="psp_tf preset; detected from the file when omitted")
    parser.add_argument("--verify", action="store_true", help="check parity with the NumPy Caffe reference")
    parser.add_argument("--savedmodel", type=checks.output_path,
                        help="also export the bare network as a SavedModel here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output/--savedmodel")
    return parser.parse_args(argv)


def file_identity(path):
    """{'name', 'size', 'sha256'} of the source file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return {"name": os.path.basename(path), "size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _reference_layers(args, net, facts):
    """The layer list that drives --verify: the prototxt's (weights by name from the file) or the file's.

    Raises:
      UserError: the prototxt declares another input size than the file's pyramid pools, or has
        Convolution/BN layers without weights in the file.
    """
    if not args.prototxt:
        return net.layers, None
    proto = reader.read_prototxt(args.prototxt)
    if proto.input_shape is not None and tuple(proto.input_shape[2:]) != facts.crop:
        raise UserError(f"--prototxt {args.prototxt} declares input {proto.input_shape[2]}x{proto.input_shape[3]}, "
                        f"but {args.caffemodel} is built for {facts.crop[0]}x{facts.crop[1]}")
    weights = {layer.name: layer.blobs for layer in net.layers if layer.blobs}
    missing = [l.name for l in proto.layers if l.type in ("Convolution", "BN") and l.name not in weights]
    if missing:
        raise UserError(f"--prototxt {args.prototxt} has layers without weights in {args.caffemodel}: "
                        f"{', '.join(missing[:8])}")
    return proto.layers, weights


def export_savedmodel(model, directory, image):
    """Exports `model` with model.export and checks the reloaded SavedModel gives the same logits."""
    import tensorflow as tf

    model.export(directory, verbose=False)
    reloaded = tf.saved_model.load(directory)
    batch = image[None].astype(np.float32)
    with verify.full_float32():
        got = np.asarray(reloaded.serve(tf.constant(batch)))
        want = model.predict(batch, verbose=0)
    rel = float(np.max(np.abs(got - want)) / max(float(np.std(want)), 1e-12))
    if rel > verify.MAX_REL_DIFF:
        raise VerificationFailed(f"the SavedModel's logits differ from the model's (max|d|/std = {rel:.3g})")
    return rel


def output_metadata(config, preset, source, report, result, savedmodel_rel):
    """The config.json content: resolved config, label space, input protocol, provenance, checks."""
    return model_metadata(
        config, preset, source,
        converter_version=convert.__version__,
        training_only_layers_skipped=report.training_only,
        bgr_folded_into=report.bgr_folded_into,
        verification=dataclasses.asdict(result) if result is not None else None,
        savedmodel_max_rel_diff=savedmodel_rel)


def _verify(model, layers, weights, args):
    try:
        result = verify.verify(model, layers, weights)
    except ValueError as e:  # a layer list the reference cannot run (e.g. an unsupported layer type)
        source = f"--prototxt {args.prototxt}" if args.prototxt else args.caffemodel
        raise UserError(f"--verify cannot run the layer list of {source}: {e}"
                        + ("" if args.prototxt else "; pass the deploy prototxt with --prototxt")) from None
    return result


def convert_file(args, log=print):
    """Runs one conversion as the flags say; returns the VerifyResult (or None without --verify)."""
    import psp_tf

    refuse_overlap([("--output", args.output), ("--savedmodel", args.savedmodel)],
                   [("--caffemodel", args.caffemodel), ("--prototxt", args.prototxt)])
    if args.savedmodel and os.path.lexists(args.savedmodel) and not args.overwrite:
        raise UserError(f"--savedmodel {args.savedmodel} already exists (pass --overwrite to replace it)")
    with atomic_directory(args.output, args.overwrite, flag="--output") as tmp:
        start = time.time()
        net = reader.read_caffemodel(args.caffemodel)
        facts = detect.describe(net, args.caffemodel)
        preset = detect.resolve_preset(facts, args.caffemodel, args.preset)
        layers, weights = _reference_layers(args, net, facts)  # checks --prototxt against the file
        log(f"{args.caffemodel}: {facts.summary()} -> preset {preset}")
        model = psp_tf.build_pspnet(preset)
        report = loader.load_caffe_weights(model, net)
        log(f"loaded {len(report.loaded)} layers; BGR folded into {report.bgr_folded_into}"
            + (f"; skipped training-only layers: {', '.join(report.training_only)}" if report.training_only else ""))
        result = None
        if args.verify:
            result = _verify(model, layers, weights, args)
            log(result.summary())
            if not result.passed:
                raise VerificationFailed(result.summary())
        del net, layers, weights
        meta = output_metadata(model.psp_config, preset, file_identity(args.caffemodel), report, result, None)
        meta["prototxt"] = os.path.basename(args.prototxt) if args.prototxt else None
        if not args.savedmodel:
            write_model_dir(model, tmp, meta)
        else:
            with atomic_directory(args.savedmodel, args.overwrite, flag="--savedmodel") as saved_tmp:
                image = verify.fixed_test_image(*model.psp_config.crop_size)
                meta["savedmodel_max_rel_diff"] = export_savedmodel(model, saved_tmp, image)
                # Written inside the SavedModel's transaction, so a failure leaves neither behind.
                write_model_dir(model, tmp, meta)
            log(f"SavedModel written to {args.savedmodel} "
                f"(max|d|/std vs the model {meta['savedmodel_max_rel_diff']:.3g})")
        log(f"wrote {args.output} in {time.time() - start:.1f} s")
    return result


class VerificationFailed(Exception):
    """--verify found the converted model differs from the Caffe reference."""


@exit_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        convert_file(args)
    except VerificationFailed as e:
        print(f"verification failed: {e}; nothing written", file=sys.stderr)
        return 1
    return 0
