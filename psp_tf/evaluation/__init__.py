"""The author's test-time protocol (sliding window, flip, scales), metrics and dataset evaluation.

Import the modules themselves (protocol.predict, evaluator.evaluate, run.evaluate, config.EvalConfig):
this package imports nothing, so the driver reads EvalConfig before TensorFlow starts.
"""
