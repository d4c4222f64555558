"""The global example stream of training: which example and which augmentation seed each position has.

Position p of the stream is example perm_e[p mod N] of epoch e = p div N (perm_e a stateless shuffle
keyed on (seed, e)), augmented with a stateless seed keyed on (seed, p). A global step holds
`pipelines * k` per-replica batches of `b` examples; `StreamSlice` says which positions one input
pipeline produces, from which step on. Every dataset reads its examples at those positions
(`Dataset.tf_stream`), each as its storage allows.
"""

import dataclasses

import tensorflow as tf

from psp_tf.errors import UserError

# Salts keeping the permutation and augmentation random streams apart.
PERMUTATION_SALT = 0x5053_5031
AUGMENT_SALT = 0x5053_5032


@dataclasses.dataclass(frozen=True)
class StreamSlice:
    """The positions of the global stream one input pipeline produces, in order.

    Attributes:
      per_replica: b, examples per replica batch.
      pipelines: n, input pipelines of the run.
      pipeline_id: i, this pipeline's index.
      replicas_per_pipeline: k, replicas each pipeline feeds.
      start_step: the first global step produced (a resumed run's).
    """

    per_replica: int
    pipelines: int = 1
    pipeline_id: int = 0
    replicas_per_pipeline: int = 1
    start_step: int = 0

    @classmethod
    def of(cls, batch_size, input_context=None, start_step=0):
        """The slice of a global `batch_size` this pipeline feeds (all of it without input_context)."""
        if input_context is None:
            return cls(batch_size, start_step=start_step)
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        replicas = input_context.num_replicas_in_sync
        if replicas % n:
            raise UserError(f"{replicas} replicas do not divide over {n} input pipelines")
        if batch_size % replicas:
            raise UserError(f"batch size {batch_size} does not divide over {replicas} replicas")
        return cls(input_context.get_per_replica_batch_size(batch_size), n, i, replicas // n, start_step)

    @property
    def step_examples(self):
        """Examples in one global step (over every pipeline)."""
        return self.pipelines * self.replicas_per_pipeline * self.per_replica

    @property
    def first_local(self):
        """This pipeline's local counter at `start_step`."""
        return self.start_step * self.replicas_per_pipeline * self.per_replica

    @property
    def first_position(self):
        """The global position of `start_step`'s first example."""
        return self.start_step * self.step_examples

    def position(self, local):
        """The global position of this pipeline's local example counter `local` (tensor or int)."""
        return global_positions(local, self.per_replica, self.pipelines, self.pipeline_id,
                                self.replicas_per_pipeline)

    def holds(self, position):
        """Whether global `position` is one of this pipeline's (tensor bool)."""
        k_b = self.replicas_per_pipeline * self.per_replica
        return (position % self.step_examples) // k_b == self.pipeline_id


def global_positions(local, per_replica, pipelines, pipeline_id, replicas_per_pipeline):
    """Maps a pipeline's local example counter to positions of the global example stream.

    Pipeline i feeds its k replicas batches t = s*k .. s*k + k - 1, i.e. replica slot i*k + t mod k
    of global step s.
    """
    b, k = per_replica, replicas_per_pipeline
    t, q = local // b, local % b
    step, slot = t // k, pipeline_id * k + t % k
    return step * (pipelines * k * b) + slot * b + q


def example_index(position, num_examples, seed, shuffle=True):
    """The dataset index at a global stream position: a fresh stateless permutation every epoch."""
    if not shuffle:
        return position % num_examples
    epoch = position // num_examples
    perm = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64),
                                                    epoch_key(seed, epoch))
    return tf.gather(perm, position % num_examples)


def epoch_key(seed, epoch):
    """int64 [2] stateless key of epoch `epoch`'s order."""
    return tf.stack([tf.constant(seed ^ PERMUTATION_SALT, tf.int64), tf.cast(epoch, tf.int64)])


def example_seed(position, seed):
    """int64 [2] augmentation seed of a global stream position."""
    return tf.stack([tf.constant(seed ^ AUGMENT_SALT, tf.int64), position])
