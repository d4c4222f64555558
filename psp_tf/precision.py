"""Which layers of a bfloat16 PSPNet compute in float32, by layer group.

`build_pspnet(precision="bfloat16")` computes in bfloat16 except where float32 is needed for range or
representability (ALWAYS_FLOAT32: the mean subtraction, the pyramid's average pools, the classifier and
its Interp, so the logits are float32). `with_float32(model, groups)` rebuilds a bfloat16 model with
whole layer groups (GROUPS, in graph order) in float32 as well, with the same weights: the tool that
measures where bfloat16's disagreement with float32 is made (benchmarks/precision_benchmark.py).

Measured there on PSPNet50-ADE20K at 473 with converted synthetic weights: the disagreement is not made
in a few layers. Every group adds to it, the deep 60x60 stages (conv4, conv5, head) most, and those
hold ~92% of the multiply-accumulates, so no set of groups kept in float32 reaches 99.5% argmax
agreement while keeping bfloat16's speed-up; the bfloat16 policy therefore stays ALWAYS_FLOAT32.
"""

import re

import keras

from psp_tf.model import PSPNet

# (group, pattern of Keras layer names), in graph order; the first match wins.
GROUPS = (
    ("input", r"data|data_mean"),
    ("stem", r"conv1_.*|pool1_.*"),
    ("pyramid", r"conv5_3_pool\d+.*|conv5_3_concat"),
    ("head", r"conv5_4.*"),
    ("classifier", r"conv6|conv6_interp"),
    ("aux", r"conv4_aux.*|conv6_aux.*"),
    ("conv2", r"conv2_\d+.*"),
    ("conv3", r"conv3_\d+.*"),
    ("conv4", r"conv4_\d+.*"),
    ("conv5", r"conv5_\d+.*"),
)
GROUP_NAMES = tuple(group for group, _ in GROUPS)
# Float32 under every precision (psp_tf.model): 123.68 is not a bfloat16; a low-precision average over
# up to 90x90 activations overflows (float16) or loses the mean (bfloat16); the logits are float32.
ALWAYS_FLOAT32 = r"data|data_mean|conv5_3_pool\d+|conv6(_aux)?|conv6(_aux)?_interp"


def layer_group(name: str) -> str:
    """The group (GROUP_NAMES) of a PSPNet layer name; ValueError for a name of no group."""
    for group, pattern in GROUPS:
        if re.fullmatch(pattern, name):
            return group
    raise ValueError(f"layer {name!r} belongs to no precision group")


def keeps_float32(name: str) -> bool:
    """Whether `build_pspnet(precision="bfloat16")` computes layer `name` in float32."""
    return re.fullmatch(ALWAYS_FLOAT32, name) is not None


def with_float32(model, groups):
    """A copy of a bfloat16 PSPNet with the layers of `groups` (GROUP_NAMES) computing in float32.

    Args:
      model: a model from `build_pspnet(..., precision="bfloat16")`.
      groups: iterable of group names.

    Returns:
      A PSPNet with `model`'s weights, config and build options.
    """
    groups = set(groups)
    unknown = groups - set(GROUP_NAMES)
    if unknown:
        raise ValueError(f"unknown precision groups {sorted(unknown)}; known: {list(GROUP_NAMES)}")

    def clone(layer):
        config = layer.get_config()
        if layer_group(layer.name) in groups:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    outputs = copy.outputs if model.build_options["aux_head"] else copy.outputs[:1]
    mixed = PSPNet(copy.inputs, outputs, model.psp_config, **model.build_options, name=model.name)
    mixed.set_weights(model.get_weights())
    return mixed
