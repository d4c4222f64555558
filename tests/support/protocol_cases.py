"""Shared cases of the evaluation tests: the tiny PSPNet with O(1) logits, smooth test images, the
MATLAB transcription's answer, the traced network's logits and the float32 bound between two runs."""

import weakref

import numpy as np
import tensorflow as tf

import psp_tf
from psp_tf.distribute import accelerator_visible
from psp_tf.evaluation import protocol
from support import matlab_reference as ref
from support.bounds import gamma


def tiny_model(seed=0):
    """The tiny PSPNet with random weights, the classifier scaled so logits are O(1) (random BN-free
    statistics otherwise give logits in the hundreds, where MATLAB's exp would overflow)."""
    import keras
    keras.utils.set_random_seed(seed)
    model = psp_tf.build_pspnet("tiny")
    conv6 = model.get_layer("conv6")
    kernel, bias = conv6.get_weights()
    conv6.set_weights([kernel * 0.01, bias + np.arange(len(bias)) * 0.1])
    return model


_REFERENCE_NETWORKS = weakref.WeakKeyDictionary()


def reference_network(model):
    """The network the MATLAB transcription calls, one tile a call: the model traced once as a
    tf.function (its own, not the protocol's). An eager call gives the same logits (bit-identical on
    the CPU) but dispatches every layer from Python: 10x slower on the tiny preset."""
    if model not in _REFERENCE_NETWORKS:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        _REFERENCE_NETWORKS[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                                 autograph=False)
    return _REFERENCE_NETWORKS[model]


def matlab_prediction(model, image, scales, flip=True, tiles=None, logits=None, network=None):
    """The MATLAB transcription's (labels, probabilities); the tiles it fed the net go to `tiles`, the
    logits the net gave it for them (one tile a call) to `logits`. `network` maps a batch of one tile
    to its logits (default: reference_network(model))."""
    config = model.psp_config
    network = network or reference_network(model)

    def net(x):
        if tiles is not None:
            tiles.append(x)
        out = network(x[None].astype(np.float32)).numpy()[0]
        if logits is not None:
            logits.append(out)
        return out

    return ref.eval_image(net, image, config.num_classes, scales, config.base_size,
                          config.crop_size[0], config.mean, flip)


_COMPILED = {}


def traced_logits(model, tiles, batch, compiled=None):
    """Logits of `tiles` as the protocol's network step computes them (XLA-compiled when `compiled`;
    None: as the protocol's default, distribute.accelerator_visible), `batch` network inputs a call."""
    if compiled is None:
        compiled = accelerator_visible()
    if not compiled:
        network = protocol.network_function(model)
    else:
        key = (id(model), batch)
        if key not in _COMPILED:
            _COMPILED[key] = tf.function(lambda x: model(x, training=False), jit_compile=True, autograph=False)
        network = _COMPILED[key]
    out = []
    for i in range(0, len(tiles), batch):
        chunk = np.stack(tiles[i:i + batch])
        if compiled and len(chunk) < batch:  # one shape, one XLA compile (the protocol pads the same way)
            chunk = np.concatenate([chunk, np.zeros([batch - len(chunk), *chunk.shape[1:]], chunk.dtype)])
        out.append(network(chunk).numpy()[:min(batch, len(tiles) - i)])
    return np.concatenate(out)


def recorded_network(batches):
    """A network for matlab_prediction that answers from recording_engine's `batches`: the recorded
    logits of the recorded input equal to the tile, byte for byte (a KeyError for any other tile)."""
    table = {x.tobytes(): z for inputs, outputs in batches for x, z in zip(inputs, outputs)}

    def network(x):
        x = np.asarray(x, np.float32)
        return tf.constant(table[x[0].tobytes()][None])

    return network


def recording_engine(batches):
    """A stand-in for protocol.engine (monkeypatch it in) whose network step also hands each batch
    it runs to `batches`, as (inputs [B, crop, crop, 3], logits [B, crop, crop, K]) NumPy arrays.

    The step is psp_tf's own (stream.Engine, TileStep, merge_flip, blending), and its network the
    model's own call on the same tensor; the logits reach Python through a py_function that the
    step's output waits for, so they are the very values predict blended. Engines are not cached.
    Not under XLA (no py_function there): on an accelerator use traced_logits instead.
    """
    from psp_tf.evaluation import stream

    def engine(model, settings, probabilities=True):
        if settings.compiled:
            raise ValueError("recording_engine cannot record an XLA-compiled step")

        def network(x):
            logits = model(x, training=False)
            saved = tf.py_function(lambda a, b: batches.append((a.numpy(), b.numpy())) or True,
                                   [x, logits], tf.bool)
            with tf.control_dependencies([saved]):
                return tf.identity(logits)

        return stream.Engine(model, settings, probabilities=probabilities, network=network)

    return engine


def float32_prob_bound(logit_noise, num_classes, num_scales):
    """Max |Δprob| float32 allows between two evaluations whose logits differ by `logit_noise`.

    The network's float32 result depends on how tiles are batched (oneDNN and Eigen pick kernels by
    shape), so its noise is measured on the very tiles; flip adds two logit maps (2x) and softmax moves
    a probability by at most 2 max|Δz| (dp_k = p_k (dz_k - sum_j p_j dz_j)). Every later stage (tile
    average, imresize with weights >= 0 summing to 1, renormalisation, scale average) is non-expansive,
    and their own float32 arithmetic is a few dozen roundings of values <= 1: softmax (exp, K terms,
    divide), blend (<= 4 tiles, divide), two resize passes (<= 6 taps each at these scales), the
    renormalising sum and divide, the scale average.
    """
    roundings = (num_classes + 3) + 5 + 2 * (6 + 1) + (num_classes + 1) + (num_scales + 1)
    return 4 * logit_noise + gamma(roundings)


def smooth_image(shape, seed):
    rng = np.random.default_rng(seed)
    # Smooth blobs plus noise, so that labels form regions and antialiasing has something to do.
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[..., None] / (7 + 5 * rng.random(3))) * np.cos(yy[..., None] / 11)
    noise = rng.normal(0, 20, (h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    return img if len(shape) == 3 else img[..., 0]
