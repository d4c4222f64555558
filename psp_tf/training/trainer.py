"""The training loop: one code path for every tf.distribute strategy, preemption-safe.

Per step (inside one tf.function; no Python ops in the graph, static shapes: TPU-safe): poly lr ->
each replica computes CE sums on its share of the global batch, divides by the *global* valid-pixel
count (all-reduced) and adds its 1/R share of the regulariser -> gradients times the per-layer lr
multipliers -> the optimizer all-reduces (sums) them and applies SGD. So R replicas give the same
update as one device with the same global batch. One tf.function call runs up to
--steps_per_execution steps in a while_loop (each replica's step XLA-compiled with --jit_compile) and
hands the host the last step's metrics once; the finite checks and the SIGTERM flag are per step,
inside the call, which ends at the first step that must stop the run.

The trained network goes to <workdir>/model (psp_tf.load_model / evaluate.py --weights).

Never lose work, never keep bad work: checkpoints every --checkpoint_every steps (model, optimizer,
step, dropout RNG state, the recipe), resume from the newest intact one at the same input position,
SIGTERM saves and exits. A non-finite loss, or any non-finite variable a checkpoint would hold, stops
the run at that step before anything is saved (psp_tf.training.checkpoints).
"""

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import time

import tensorflow as tf

from psp_tf.training import config as config_lib
from psp_tf.training import checkpoints, inputs, losses, schedules, summaries
from psp_tf.training.artifacts import save_trained_model
from psp_tf.progress import Progress
from psp_tf.training.tensorboard import Scalars
from psp_tf.training.state import build_state
from psp_tf.distribute import is_chief, make_strategy, worker_index

class TrainingDiverged(RuntimeError):
    """The loss or a variable became NaN or inf; the message names the step, the variables and the
    checkpoint that was kept."""


class Preempted(Exception):
    """SIGTERM (or a first Ctrl-C, SIGINT) arrived; a checkpoint of `step` was saved.

    Attributes:
      step: the step saved.
      exit_code: 128 + the signal's number, as a shell reports a process that signal ended (143 for
        SIGTERM: schedulers read it as "killed, restart me").
    """

    def __init__(self, step, signum=signal.SIGTERM):
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: saved a checkpoint at step {step}; rerun the same command to resume")
        self.step, self.exit_code = step, 128 + int(signum)


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns: the final step, last loss, and the last evaluation (or None)."""

    step: int
    loss: float
    metrics: dict
    model: object
    workdir: str


def train(config, *, input_fn=None, evaluate_fn=None, model_overrides=None, stream=None):
    """Trains (or resumes) the run described by `config` in `config.workdir`.

    The configuration is resolved once, here, before anything else: the recipe defaults
    (`config.resolve`), then the network that trains and its augmentation from the preset, the flags
    and the training data's label space (`inputs.resolve_run`). That record is what
    `train_config.json` and every checkpoint hold, and what everything after reads.

    Args:
      config: a TrainConfig.
      input_fn: `(input_context, per_replica_batch, start_step) -> tf.data.Dataset` of
        (images float32 [b, H, W, 3], labels int [b, H, W]); default: psp_tf.training.inputs.
      evaluate_fn: `(inference_model, strategy) -> dict` with at least 'miou' (a fraction), and
        optionally 'images' [(tag, uint8 [H, W, 3])] for TensorBoard (not kept in the result); default:
        the sliding-window evaluator on --eval_split; False: no evaluation. Called every --eval_every
        steps and at the end.
      model_overrides: extra PSPNetConfig overrides (tests: dropout=0); recorded in the network config.
      stream: where progress goes (stdout).

    Returns:
      TrainResult.

    Raises:
      UserError: bad or contradicting settings, a blocked work directory (before anything is
        written), a work directory in use by another run, checkpoints of which none is usable or
        that were written with another recipe.
      TrainingDiverged: non-finite loss or variable. Preempted: SIGTERM.
    """
    config = config_lib.resolve(config)
    checkpoints.check_workdir(config.workdir)
    train_data = inputs.open_train_data(config) if input_fn is None else None
    config = inputs.resolve_run(config, train_data, model_overrides)
    config_lib.check_recorded(config, config.workdir)  # another run's work directory: refused before anything is made
    strategy = make_strategy(config.strategy, config.tpu)
    chief = is_chief(strategy)
    stream = stream or sys.stdout
    progress = Progress(config.steps, label="step", per_step=config.batch_size, stream=stream, enabled=chief,
                        lines=40)
    if evaluate_fn is None:
        evaluate_fn = inputs.default_evaluate_fn(config, _EvaluationProgress(stream, chief))
    if input_fn is None:
        input_fn = inputs.make_input_fn(config, train_data)
    state = build_state(config, strategy, input_fn, evaluate_fn or None)
    progress.message(state.description)
    if config.strategy == "tpu" and config.evaluates:
        progress.message(f"--strategy tpu: no evaluation inside the run; score {config.workdir}/model "
                         f"with psp-evaluate")
    with _claim(config, strategy, chief):
        start = _restore(state, config, chief, progress)
        manager = _checkpoint_manager(state.checkpoint, config, strategy, chief)
        loss, metrics = _run(config, strategy, state, manager, progress, chief, start)
    return TrainResult(int(state.step.numpy()), loss, metrics, state.model, config.workdir)


def _run(config, strategy, state, manager, progress, chief, start):
    """Trains from `start`, saves the model, evaluates; returns (last loss, final metrics)."""
    scalars = Scalars(os.path.join(config.workdir, "tensorboard"), enabled=chief)
    try:
        loss = _loop(config, strategy, state, manager, progress, scalars, start)
        model_dir = os.path.join(config.workdir, "model")
        if chief:  # before the evaluation, so that a failing evaluation cannot cost the trained model
            save_trained_model(state.model, model_dir, config, config.steps)
        metrics = _evaluate(state, strategy, config.steps, progress, scalars) if state.evaluate_fn else {}
        if chief and metrics:
            save_trained_model(state.model, model_dir, config, config.steps, metrics)
    finally:
        scalars.close()
        _cleanup_worker_dir(config, strategy, chief)
    return loss, metrics


def _save_directory(config, strategy, chief):
    # Every worker must save (variables may be read with collectives); only the chief's copy is kept.
    if chief:
        return os.path.join(config.workdir, "checkpoints")
    return os.path.join(config.workdir, ".worker_tmp", f"worker_{worker_index(strategy)}")


def _claim(config, strategy, chief):
    """The chief locks the work directory, a worker its scratch directory; stale temporaries go."""
    lock = config.workdir if chief else _save_directory(config, strategy, chief)
    return checkpoints.claim_directory(lock, _save_directory(config, strategy, chief))


def _checkpoint_manager(checkpoint, config, strategy, chief):
    return tf.train.CheckpointManager(checkpoint, _save_directory(config, strategy, chief),
                                      max_to_keep=config.keep_checkpoints)


def _cleanup_worker_dir(config, strategy, chief):
    if not chief:
        parent = os.path.join(config.workdir, ".worker_tmp")
        shutil.rmtree(os.path.join(parent, f"worker_{worker_index(strategy)}"), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(parent)  # only when the other workers are done with it too


def _restore(state, config, chief, progress):
    """Restores the newest intact checkpoint of the chief's directory, then (chief) records the run.

    Returns:
      The step to start at (0 for a new run).
    """
    directory = os.path.join(config.workdir, "checkpoints")
    start, older = checkpoints.restore_newest_intact(state, directory, config, progress.message)
    if chief:  # after the recipe check against the checkpoint, so a refused resume writes nothing
        config_lib.save(config, config.workdir)
        if start:  # CheckpointManager then rotates exactly the checkpoints on disk, not a stale list
            checkpoints.write_state_file(directory, start, older)
        else:
            checkpoints.discard_unreadable_state_file(directory, progress.message)
    return start


def make_train_step(state, strategy, config):
    """The distributed train call: `(iterator, stop, steps) -> metrics of the last step run`.

    One call runs up to `steps` steps (a tf.while_loop: the host is not involved between them) and
    returns once, so the metrics reach the host once per call. Every step checks its loss and every
    variable a checkpoint would hold; the loop ends after the first step that is not finite, or
    whose all-reduced SIGTERM flag is set, so the host sees that step's number in `state.step`.
    With `config.jit_compile` each replica's step is compiled with XLA.
    """
    # autograph=False throughout: the step has no Python control flow on tensors (the loop below is an
    # explicit while_loop), and converting the model's and the library's code took ~30% of each trace.
    replica_step = tf.function(_replica_step_fn(state, strategy, config), jit_compile=config.jit_compile,
                               autograph=False)

    def one_step(iterator, stop):
        lr = schedules.poly_lr(state.step, config.lr, config.steps, config.poly_power)
        state.optimizer.learning_rate.assign(lr)
        images, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(images, labels, stop))
        state.step.assign_add(1)
        metrics = {k: tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), tf.float32)
                   for k, v in per_replica.items()}
        metrics["lr"] = tf.cast(lr, tf.float32)
        return metrics

    @tf.function(autograph=False)
    def train_steps(iterator, stop, steps):
        # A while_loop (the host is not involved between steps) that ends early, after the first step
        # that must stop the run. Its state exists before it, so the step is traced once.
        def body(done, metrics, must_stop):
            metrics = one_step(iterator, stop)
            return done + 1, metrics, _must_stop(metrics)

        start = (tf.constant(0), {k: tf.constant(0.0) for k in METRICS}, tf.constant(False))
        _, metrics, _ = tf.while_loop(lambda done, metrics, must_stop: (done < steps) & ~must_stop, body, start,
                                      maximum_iterations=steps)
        return metrics

    return train_steps


METRICS = ("loss", "ce_main", "ce_aux", "regularizer", "stop", "nonfinite_replicas", "lr")


def _must_stop(metrics):
    return (metrics["nonfinite_replicas"] > 0) | ~tf.math.is_finite(metrics["loss"]) | (metrics["stop"] > 0)


def _replica_step_fn(state, strategy, config):
    """One replica's step: loss, gradients, update, and the finite check of what a checkpoint holds."""
    model, optimizer = state.model, state.optimizer
    variables = model.trainable_variables
    checked = checkpoints.checked_variables(state)
    multipliers = state.multipliers
    replicas = strategy.num_replicas_in_sync
    fp16 = config.mixed_precision == "fp16"

    def replica_step(images, labels, stop):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            sums = losses.pspnet_loss_sums(outputs, labels, config.aux_weight)
            # One all-reduce for the global pixel count and the SIGTERM flag: a preempted worker must
            # take the others with it, or they would block in the next collective.
            count, stop = tf.unstack(tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.stack([sums["count"], stop])))
            ce, main, aux = losses.combine(sums, count, config.aux_weight)
            reg = state.regularizer() / replicas
            total = ce + reg
            objective = optimizer.scale_loss(total) if fp16 else total
        grads = tape.gradient(objective, variables)
        grads = [g if m == 1.0 or g is None else g * m for g, m in zip(grads, multipliers)]
        optimizer.apply(grads, variables)
        # After the update, on each replica's own copies: is everything the next checkpoint would hold
        # (weights, BN statistics, optimizer slots) finite? One fused reduction, part of every step.
        nonfinite = 1.0 - tf.cast(checkpoints.all_finite(checked), tf.float32)
        return {"loss": total, "ce_main": main, "ce_aux": aux, "regularizer": reg, "stop": tf.stop_gradient(stop),
                "nonfinite_replicas": nonfinite}

    return replica_step


def _steps_in_call(config, step):
    """How many steps the call starting after `step` runs: --steps_per_execution, but it ends on every
    step the host acts on (a checkpoint, an evaluation, the last step)."""
    boundaries = [config.checkpoint_every, config.steps_per_execution] + (
        [config.eval_every] if config.eval_every else [])
    next_boundary = min(step + b - step % b for b in boundaries)
    return min(next_boundary, config.steps) - step


def _loop(config, strategy, state, manager, progress, scalars, start):
    """Runs steps start..steps; returns the last loss."""
    stop = _StopFlag()
    loss = math.nan
    try:
        if start >= config.steps:
            return loss
        iterator = iter(state.make_dataset(start))
        train_steps = make_train_step(state, strategy, config)
        step = start
        while step < config.steps:
            count = _steps_in_call(config, step)
            metrics = {k: float(v) for k, v in train_steps(
                iterator, tf.constant(float(stop.flag)), tf.constant(count, tf.int32)).items()}
            previous, step = step, int(state.step.numpy())
            loss, nonfinite = metrics["loss"], metrics.pop("nonfinite_replicas")
            if not math.isfinite(loss) or nonfinite > 0:
                raise TrainingDiverged(_divergence_message(config, state, step, loss, manager.latest_checkpoint))
            progress.update(step, loss=loss, lr=metrics["lr"])
            if step // 10 > previous // 10 or step == config.steps:
                scalars.write(step, {**{f"train/{k}": v for k, v in metrics.items()},
                                     "train/images_per_second": progress.speed})
            if step % config.checkpoint_every == 0 or step == config.steps:
                manager.save(checkpoint_number=step)
            if config.eval_every and step % config.eval_every == 0 and step < config.steps and state.evaluate_fn:
                _evaluate(state, strategy, step, progress, scalars)
            if metrics["stop"] > 0:
                if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
                    manager.save(checkpoint_number=step)
                raise Preempted(step, stop.signum)
    finally:
        stop.restore()
    return loss


def _divergence_message(config, state, step, loss, kept):
    """One line: what became non-finite at `step`, what was kept, and what the user can do next."""
    variables = checkpoints.checked_variables(state)
    bad = checkpoints.nonfinite_names(variables)
    what = ([f"loss is {loss}"] if not math.isfinite(loss) else []) + (
        [checkpoints.describe_nonfinite(bad, len(variables))] if bad else [])
    kept_text = f"last good checkpoint: {kept}" if kept else "no checkpoint saved yet"
    # The resume guard fixes the recipe of a work directory, so "lower --lr" alone would be refused.
    return (f"{' and '.join(what)} at step {step}; stopped without saving ({kept_text}). To train with a "
            f"lower --lr, delete {config.workdir} or pass another --workdir (a resume there keeps "
            f"--lr={config.lr}); if the data at step {step} may be bad, check it with psp-check-data")


def _evaluate(state, strategy, step, progress, scalars):
    started = time.perf_counter()
    metrics = state.evaluate_fn(state.inference_model, strategy)
    progress.message(f"evaluation at step {step}: mIoU {metrics['miou']:.4f}"
                     f" ({time.perf_counter() - started:.0f} s)")
    scalars.write(step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    images = metrics.pop("images", ())
    if scalars.writer is not None:
        summaries.write_images(scalars.writer, step, images)
    return metrics


class _StopFlag:
    """Turns SIGTERM, and a first Ctrl-C (SIGINT), into a flag that the next step all-reduces, so every
    worker stops together after saving. A second Ctrl-C interrupts at once (the previous handler is
    back after the first)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.flag, self.signum = False, signal.SIGTERM
        self.previous = {}
        try:
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a job started with `&`
                    self.previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _handler(self, signum, frame):
        del frame
        self.flag, self.signum = True, signum
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous[signum])

    def restore(self):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


class _EvaluationProgress:
    """The evaluator's `on_progress(done, total)` inside training: one progress line per evaluation."""

    def __init__(self, stream, enabled):
        self.stream, self.enabled, self.bar, self.done = stream, enabled, None, None

    def __call__(self, done, total):
        if self.bar is None or done < self.done:  # the first report of a new evaluation
            self.bar = Progress(total, label="evaluating", unit="img", stream=self.stream, enabled=self.enabled,
                                lines=10)
        self.done = done
        self.bar.update(done, total)
