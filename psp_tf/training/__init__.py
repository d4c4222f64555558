"""Training: config, losses, L2-SP, schedules, --init, and the distributed, preemption-safe trainer.

The package itself is light (the config only): train.py reads `TrainConfig` before TensorFlow starts,
so `--help` and a bad flag answer at once. The trainer is `psp_tf.training.trainer.train`.
"""

from psp_tf.training.config import TrainConfig, resolve

__all__ = ["TrainConfig", "resolve"]
