"""The author's test-time protocol (sliding window, flip, scales), metrics and dataset evaluation."""

from psp_tf.evaluation.evaluator import EvalResult, evaluate
from psp_tf.evaluation.metrics import confusion_matrix, summarize
from psp_tf.evaluation.protocol import MULTI_SCALES, Prediction, ProtocolSettings, predict, settings_for

__all__ = ["EvalResult", "evaluate", "confusion_matrix", "summarize", "MULTI_SCALES", "Prediction",
           "ProtocolSettings", "predict", "settings_for"]
