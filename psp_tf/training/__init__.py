"""Training: config, losses, L2-SP, schedules, --init, and the distributed, preemption-safe trainer."""

from psp_tf.training.config import TrainConfig, resolve
from psp_tf.training.trainer import Preempted, TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "resolve", "train", "TrainResult", "TrainingDiverged", "Preempted"]
