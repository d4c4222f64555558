"""One conversion: the author's .caffemodel -> a psp_tf output directory (checkpoint, weights, config).

`convert_file(ConvertConfig(...))` is the library call behind `psp-convert` (psp_tf/cli/convert.py).
The output directory holds `ckpt.*` (tf.train.Checkpoint of the model), `model.weights.h5` (Keras)
and `config.json`; `psp_tf.load_model(dir)` rebuilds the inference model from it. Bad input ends in
one `error:` line, exit 2, and nothing written; a failed --verify exits 1 and writes nothing.
"""

import dataclasses
import hashlib
import os
import time

import numpy as np
import tensorflow as tf

from psp_tf import convert
from psp_tf.convert import detect, loader, reader, verify
from psp_tf.errors import UserError
from psp_tf.export import network_module
from psp_tf.layers import kernels_loaded_next
from psp_tf.model import build_pspnet
from psp_tf.model_dir import model_metadata, write_model_dir
from psp_tf.outputs import atomic_directory, refuse_overlap


def file_identity(path):
    """{'name', 'size', 'sha256'} of the source file."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return {"name": os.path.basename(path), "size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _reference_layers(config, net, facts):
    """The layer list that drives --verify: the prototxt's (weights by name from the file) or the file's.

    Raises:
      UserError: the prototxt declares another input size than the file's pyramid pools, or has
        Convolution/BN layers without weights in the file.
    """
    if not config.prototxt:
        return net.layers, None
    proto = reader.read_prototxt(config.prototxt)
    if proto.input_shape is not None and len(proto.input_shape) != 4:
        raise UserError(f"--prototxt {config.prototxt} declares the input shape {list(proto.input_shape)}, not "
                        f"[batch, 3, height, width]")
    if proto.input_shape is not None and tuple(proto.input_shape[2:]) != facts.crop:
        raise UserError(f"--prototxt {config.prototxt} declares input {proto.input_shape[2]}x{proto.input_shape[3]}, "
                        f"but {config.caffemodel} is built for {facts.crop[0]}x{facts.crop[1]}")
    weights = {layer.name: layer.blobs for layer in net.layers if layer.blobs}
    missing = [l.name for l in proto.layers if l.type in ("Convolution", "BN") and l.name not in weights]
    if missing:
        raise UserError(f"--prototxt {config.prototxt} has layers without weights in {config.caffemodel}: "
                        f"{', '.join(missing[:8])}")
    return proto.layers, weights


def export_savedmodel(model, directory, image, want=None):
    """Exports the bare network (one copy of the weights) and checks the reloaded logits equal the model's.

    Args:
      want: the model's logits on `image` where already computed (--verify's), else None.
    """
    module = network_module(model)
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
    reloaded = tf.saved_model.load(directory)
    batch = image[None].astype(np.float32)
    with verify.full_float32():
        got = np.asarray(reloaded.serve(tf.constant(batch)))
        if want is None:
            want = model.predict(batch, verbose=0)
    if np.shape(want) != got.shape:  # a caller's logits of another image size would broadcast silently
        raise ValueError(f"logits of shape {np.shape(want)} given for a SavedModel output of {got.shape}")
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


def _verify(model, layers, weights, config):
    try:
        result = verify.verify_with_logits(model, layers, weights)
    except ValueError as e:  # a layer list the reference cannot run (e.g. an unsupported layer type)
        source = f"--prototxt {config.prototxt}" if config.prototxt else config.caffemodel
        raise UserError(f"--verify cannot run the layer list of {source}: {e}"
                        + ("" if config.prototxt else "; pass the deploy prototxt with --prototxt")) from None
    return result


def convert_file(config, log=print):
    """Runs one conversion; returns the VerifyResult (or None without --verify).

    Args:
      config: ConvertConfig.
      log: where progress lines go.

    Raises:
      UserError: bad input (nothing written).
      VerificationFailed: --verify found a difference (nothing written).
    """
    refuse_overlap([("--output", config.output), ("--savedmodel", config.savedmodel)],
                   [("--caffemodel", config.caffemodel), ("--prototxt", config.prototxt)])
    if config.savedmodel and os.path.lexists(config.savedmodel) and not config.overwrite:
        raise UserError(f"--savedmodel {config.savedmodel} already exists (pass --overwrite to replace it)")
    with atomic_directory(config.output, config.overwrite, flag="--output") as tmp:
        start = time.time()
        net = reader.read_caffemodel(config.caffemodel)
        facts = detect.describe(net, config.caffemodel)
        preset = detect.resolve_preset(facts, config.caffemodel, config.preset)
        layers, weights = _reference_layers(config, net, facts)  # checks --prototxt against the file
        log(f"{config.caffemodel}: {facts.summary()} -> preset {preset}")
        # load_caffe_weights refuses a file that leaves any weight layer unloaded, so no random kernel
        # survives: zeros skip the he_normal draw (2 s of building PSPNet101 on one core).
        with kernels_loaded_next():
            model = build_pspnet(preset)
        report = loader.load_caffe_weights(model, net)
        log(f"loaded {len(report.loaded)} layers; BGR folded into {report.bgr_folded_into}"
            + (f"; skipped training-only layers: {', '.join(report.training_only)}" if report.training_only else ""))
        result, logits = None, None
        if config.verify:
            result, logits = _verify(model, layers, weights, config)
            logits = logits if config.savedmodel else None  # ~300 MB at 713: not kept through the writes
            log(result.summary())
            if not result.passed:
                raise VerificationFailed(result.summary())
        del net, layers, weights
        meta = output_metadata(model.psp_config, preset, file_identity(config.caffemodel), report, result, None)
        meta["prototxt"] = os.path.basename(config.prototxt) if config.prototxt else None
        if not config.savedmodel:
            write_model_dir(model, tmp, meta)
        else:
            with atomic_directory(config.savedmodel, config.overwrite, flag="--savedmodel") as saved_tmp:
                image = verify.fixed_test_image(*model.psp_config.crop_size)  # --verify's image
                meta["savedmodel_max_rel_diff"] = export_savedmodel(model, saved_tmp, image, logits)
                del logits
                # Written inside the SavedModel's transaction, so a failure leaves neither behind.
                write_model_dir(model, tmp, meta)
            log(f"SavedModel written to {config.savedmodel} "
                f"(max|d|/std vs the model {meta['savedmodel_max_rel_diff']:.3g})")
        log(f"wrote {config.output} in {time.time() - start:.1f} s")
    return result


class VerificationFailed(Exception):
    """--verify found the converted model differs from the Caffe reference."""
