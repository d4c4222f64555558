"""Builds everything a run needs before step 0: data, model, --init, regulariser, optimizer, checkpoint.

All of it is created under the strategy's scope from the resolved run (`config.network` is the
network; nothing here re-reads the preset), and every user-facing check (--init, the batch split)
runs here, before the config is written or a step is taken.
"""

import dataclasses
from typing import Callable, List, Optional

import keras
import tensorflow as tf

from psp_tf.errors import UserError
from psp_tf.model import build_pspnet
from psp_tf.training import schedules
from psp_tf.training.checkpoints import Recipe
from psp_tf.training.warm_start import initialize
from psp_tf.training.regularizers import Regularizer, build_regularizer


@dataclasses.dataclass
class TrainState:
    """The objects of one run.

    Attributes:
      model: the training model (aux head when aux_weight > 0).
      inference_model: main logits only, sharing the weights (for evaluation).
      optimizer: SGD with momentum (wrapped in LossScaleOptimizer for fp16).
      step: int64 variable, number of updates done (drives the lr and the input position).
      regularizer: L2-SP / weight decay.
      multipliers: per trainable variable lr factor.
      checkpoint: tf.train.Checkpoint of model, optimizer, step, the dropout RNG state and the recipe.
      make_dataset: start_step -> distributed dataset positioned at that step.
      evaluate_fn: (inference_model, strategy) -> metrics dict, or None.
      description: one log line about the initialisation.
    """

    model: object
    inference_model: object
    optimizer: object
    step: tf.Variable
    regularizer: Regularizer
    multipliers: List[float]
    checkpoint: tf.train.Checkpoint
    make_dataset: Callable
    evaluate_fn: Optional[Callable]
    description: str


def per_replica_batch(config, strategy):
    """The batch each replica computes (the global --batch_size split evenly over the replicas).

    Raises:
      UserError: --batch_size does not divide over the strategy's replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(f"--batch_size={config.batch_size} is not divisible by the {replicas} replicas "
                        f"of --strategy {config.strategy}")
    return config.batch_size // replicas


def build_state(config, strategy, input_fn, evaluate_fn=None):
    """Builds the resolved network under `strategy`, applies --init, makes the optimizer.

    Args:
      config: the resolved run (`inputs.resolve_run`): `config.network` is the network built.
      strategy: the tf.distribute strategy.
      input_fn: `(input_context, per_replica_batch, start_step) -> tf.data.Dataset`.
      evaluate_fn: `(inference_model, strategy) -> metrics`, or None.

    Raises:
      UserError: --init is unusable, or the batch does not divide over the replicas.
    """
    per_replica = per_replica_batch(config, strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_pspnet(config.network, aux_head=config.aux_weight > 0, sync_bn=config.sync_bn,
                             precision=config.precision)
        if config.freeze_bn:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # Keras 3: inference-mode BN, gamma/beta frozen
        init = initialize(model, config.init, class_names=config.network.class_names,
                          fresh_classifier=config.fresh_classifier)
        regularizer = build_regularizer(model, init.kernels, config.weight_decay, config.l2sp_alpha,
                                        config.l2sp_beta)
        new_layers = [l.name for l in model.layers if l.weights and l.name not in init.layers] if init.layers else []
        multipliers = schedules.gradient_multipliers(model.trainable_variables, new_layers, config.head_lr_mult)
        optimizer = _optimizer(config, model)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                                         dropout_rng=_dropout_states(model), recipe=Recipe(config))
    inference = model.without_aux_head()  # the same layers: trained weights are evaluated as they change

    def make_dataset(start_step):
        return strategy.distribute_datasets_from_function(
            lambda ctx: input_fn(ctx, per_replica, start_step))

    return TrainState(model, inference, optimizer, step, regularizer, multipliers, checkpoint,
                      make_dataset, evaluate_fn, init.description)


def _optimizer(config, model):
    # lr is assigned each step from the poly schedule (one source of truth: the step variable).
    optimizer = keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum)
    if config.mixed_precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def _dropout_states(model):
    """Dropout RNG states by layer name: Keras does not checkpoint them, and without them a resumed
    run would draw other masks than an uninterrupted one."""
    states = {}
    for layer in model.layers:
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            states[layer.name] = generator.state.value
    return states
