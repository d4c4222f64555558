"""Servable and mobile forms of a PSPNet: a SavedModel with the author's protocol inside, TFLite networks.

The SavedModel (`write_savedmodel`) needs nothing of psp_tf to run (TensorFlow Serving,
`tf.saved_model.load`, `saved_model_cli`). Its signatures take a batch of encoded images, as TF
Serving clients send them:

- `serving_default(images tf.string [N])` -> `labels` uint8 [N, H, W] (train ids; 255 beyond an
  image's own size, where N images of different sizes share one tensor of the largest H and W) and
  `sizes` int32 [N, 2] (each image's height and width);
- `probabilities(images tf.string [N])` -> the same plus `probabilities` float32 [N, H, W, K] (0
  beyond an image's size). One 600x512 ADE20K image's map is 184 MB, so it is not the default.

Each image is decoded as training and evaluation decode it (psp_tf.data.decode.decode_image:
accurate-DCT JPEG, PNG, BMP; grey replicated, alpha dropped) and segmented with the protocol the
export was asked for (psp_tf.evaluation.protocol: the author's resize, sliding window over
crop-size tiles with 1/3 overlap, mirrored pass, blending and scales), one image after another.

The TFLite files (`tflite_network`) hold the bare fixed-size network: float32 [1, crop, crop, 3]
RGB 0..255 in, float32 logits [1, crop, crop, K] out; tiling and resizing are the caller's.
"""

import dataclasses
import json
import os

import tensorflow as tf

from psp_tf.data.decode import decode_image
from psp_tf.evaluation import protocol
from psp_tf.inference.config import TFLITE_KINDS
from psp_tf.model_dir import load_model
from psp_tf.outputs import atomic_directory, refuse_overlap

METADATA_FILE = "psp_tf.json"
PAD_LABEL = 255  # beyond an image's own size in a batch's label tensor (train ids are 0..K-1 <= 254)


def _variables(model):
    """The model's tf.Variables, each once.

    A SavedModel of the Keras model itself (model.export, keras.export.ExportArchive) stores every
    weight twice, under `variables` and `_all_variables` (an open upstream Keras issue: 357.5 MiB of
    variables for PSPNet50's 178.7 MiB, benchmarks/export_benchmark.py). A plain tf.Module that
    tracks only the underlying variables saves one copy; the traced functions capture exactly these.
    """
    return [v.value for v in model.weights]


def network_module(model, batch=None):
    """A tf.Module whose `serve(x float32 [batch, crop, crop, 3])` returns the logits; one copy of the weights."""
    module = tf.Module(name="pspnet_network")
    module.weights = _variables(model)
    spec = tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32, name="x")
    # No autograph, as for the other signatures: the network has no Python control flow on tensors.
    module.serve = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return module


def _decode_batch(images):
    """tf.string [N] -> (TensorArray of uint8 [h_i, w_i, 3], sizes int32 [N, 2])."""
    n = tf.shape(images)[0]
    decoded = tf.TensorArray(tf.uint8, size=n, infer_shape=False, element_shape=[None, None, 3])
    sizes = tf.TensorArray(tf.int32, size=n, element_shape=[2])

    def body(i, decoded, sizes):
        image = decode_image(images[i])
        return i + 1, decoded.write(i, image), sizes.write(i, tf.shape(image)[:2])

    _, decoded, sizes = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), decoded, sizes))
    return decoded, sizes.stack()


def segment_batch(model, settings, images, probabilities):
    """The protocol on a batch of encoded images, padded to one size (the signatures' body).

    Args:
      model: a PSPNet; settings: protocol.ProtocolSettings.
      images: tf.string [N], JPEG/PNG/BMP bytes.
      probabilities: also return the padded probabilities.

    Returns:
      dict: labels uint8 [N, H, W], sizes int32 [N, 2] (+ probabilities float32 [N, H, W, K]).
    """
    num_classes = model.psp_config.num_classes
    decoded, sizes = _decode_batch(images)
    n = tf.shape(images)[0]
    height = tf.reduce_max(tf.concat([sizes[:, 0], [0]], 0))
    width = tf.reduce_max(tf.concat([sizes[:, 1], [0]], 0))
    labels = tf.TensorArray(tf.uint8, size=n, element_shape=[None, None])
    probs = tf.TensorArray(tf.float32, size=n if probabilities else 0, element_shape=[None, None, num_classes])

    def body(i, labels, probs):
        image = decoded.read(i)
        (label, prob), = protocol.protocol_graph(model, [image], settings, probabilities)
        pad = [[0, height - tf.shape(image)[0]], [0, width - tf.shape(image)[1]]]
        labels = labels.write(i, tf.pad(tf.cast(label, tf.uint8), pad, constant_values=PAD_LABEL))
        if probabilities:
            probs = probs.write(i, tf.pad(prob, pad + [[0, 0]]))
        return i + 1, labels, probs

    # parallel_iterations=1: one image's protocol at a time bounds the memory as for a single image.
    _, labels, probs = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), labels, probs),
                                     parallel_iterations=1)
    result = {"labels": _stack(labels, [n, height, width], tf.uint8), "sizes": sizes}
    if probabilities:
        result["probabilities"] = _stack(probs, [n, height, width, num_classes], tf.float32)
    return result


def _stack(array, shape, dtype):
    """array.stack() as `shape`; an empty batch gives an empty tensor (stack refuses an empty list
    whose element shape is not fully known)."""
    return tf.cond(shape[0] > 0, lambda: tf.reshape(array.stack(), shape), lambda: tf.zeros(shape, dtype))


def serving_module(model, settings):
    """A tf.Module with the two encoded-image signatures (`serve`, `serve_probabilities`)."""
    if model.psp_config.num_classes > PAD_LABEL:
        raise ValueError(f"{model.psp_config.num_classes} classes do not fit uint8 labels with {PAD_LABEL} as padding")
    module = tf.Module(name="pspnet_protocol")
    module.weights = _variables(model)
    spec = tf.TensorSpec([None], tf.string, name="images")
    # autograph=False: the protocol is written with explicit tf.while_loop / tf.cond.
    module.serve = tf.function(lambda images: segment_batch(model, settings, images, False),
                               input_signature=[spec], autograph=False)
    module.serve_probabilities = tf.function(lambda images: segment_batch(model, settings, images, True),
                                             input_signature=[spec], autograph=False)
    return module


def write_savedmodel(model, directory, settings):
    """Writes the protocol SavedModel and its `psp_tf.json` to `directory` (empty or absent).

    Args:
      model: a PSPNet (psp_tf.build_pspnet / load_model).
      directory: output path.
      settings: protocol.ProtocolSettings.
    """
    module = serving_module(model, settings)
    signatures = {"serving_default": module.serve, "probabilities": module.serve_probabilities}
    tf.saved_model.save(module, directory, signatures=signatures)
    config = model.psp_config
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump({"preset": config.name, "class_names": list(config.class_names),
                   "palette": [list(c) for c in config.palette],
                   "protocol": dataclasses.asdict(settings),
                   "signatures": {
                       "serving_default": "images tf.string [N] (JPEG/PNG/BMP bytes) -> labels uint8 [N, H, W] "
                                          f"({PAD_LABEL} beyond each image's size), sizes int32 [N, 2]",
                       "probabilities": "images tf.string [N] -> labels, sizes, probabilities float32 "
                                        "[N, H, W, K] (0 beyond each image's size)"}}, f, indent=2)


def tflite_network(model, kind="float32"):
    """The fixed-size network as a TFLite flatbuffer (bytes): [1, crop, crop, 3] -> logits.

    Args:
      model: a PSPNet.
      kind: 'float32'; 'float16' (weights stored as float16, computed in float32 on CPU); or
        'dynamic_int8' (weights quantised to int8, activations float).
    """
    if kind not in TFLITE_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {TFLITE_KINDS}")
    module = network_module(model, batch=1)
    # The module, not the Keras model, as the trackable: with the model the converter froze no weights
    # (a 98 KB file for 964 KB of them, NaN logits); the module exposes the variables themselves.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    if kind != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_model(config, log=print):
    """Runs one export (psp-export): the protocol SavedModel, then each TFLite network asked for.

    Args:
      config: psp_tf.inference.config.ExportConfig.
      log: where progress lines go.

    Raises:
      UserError: bad weights, scales or output (nothing written).
    """
    refuse_overlap([("--output", config.output)], [("--weights", config.weights)])
    protocol.parse_scales(config.scales)  # a bad --scales is named before the weights are read
    model = load_model(config.weights, precision=config.precision)
    settings = protocol.settings_for(model, protocol.parse_scales(config.scales), config.flip,
                                     batch_size=config.batch_size)
    with atomic_directory(config.output, config.overwrite, flag="--output") as tmp:
        write_savedmodel(model, tmp, settings)
        for kind in config.tflite:
            # The float32 network: a bfloat16 graph would not convert to a CPU TFLite model.
            network = model if config.precision == "float32" else protocol.with_precision(model, "float32")
            with open(os.path.join(tmp, f"network_{kind}.tflite"), "wb") as f:
                f.write(tflite_network(network, kind))
    log(f"SavedModel written to {config.output}: serving_default(images tf.string [N]) -> labels uint8 "
        f"[N, H, W], sizes; signature 'probabilities' adds probabilities float32 [N, H, W, K]"
        + "".join(f"; network_{kind}.tflite" for kind in config.tflite))
