"""Inference tools' library side: their configs (config.py, light) and segmenting files (files.py).

`psp_tf.predict(model, image)` (psp_tf/evaluation/protocol.py) is the library call for arrays;
psp_tf/export.py writes the SavedModel and TFLite forms. The command lines are psp_tf/cli/predict.py
and psp_tf/cli/export.py.
"""
