"""The author's test-time protocol (sliding window, flip, scales), metrics and dataset evaluation.

Light on purpose (it imports nothing): the evaluate driver reads this package's config before
TensorFlow starts. The protocol is psp_tf.evaluation.protocol (`predict`, `settings_for`), the
dataset loop psp_tf.evaluation.evaluator (`evaluate`), the scores psp_tf.evaluation.metrics.
"""
