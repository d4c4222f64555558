"""A network's BN layers given statistics far from the identity, so that every layer matters in a
comparison (freshly built BN is the identity map, which would hide a wrong BN)."""

import keras
import numpy as np


def randomize_bn(model, seed):
    """Sets every BN layer's gamma, beta, moving mean and variance from `seed`; returns `model`."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])
    return model
