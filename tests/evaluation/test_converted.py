"""The issue's proof at full size: a synthetic PSPNet50-ADE20K caffemodel (the converter's writer),
converted with `python -m convert`, loaded with psp_tf.model_dir.load_model, then psp_tf.predict compared
with the NumPy transcription of the MATLAB protocol on an ADE-sized image (300x400 -> 385x513, padded
to 473 rows: 1x2 tiles, flip on). The other branches run at full speed on the tiny preset in
test_eval_protocol.py; a full-size forward costs seconds on 2 cores, so this one case is enough here."""

import os
import subprocess
import sys

import numpy as np
import pytest

from support.protocol_cases import float32_prob_bound, matlab_prediction, smooth_image, traced_logits
from support import REPO



@pytest.mark.slow
def test_converted_pspnet50_matches_matlab_protocol(tmp_path):
    from psp_tf.convert.synthetic import write_caffemodel
    from psp_tf.evaluation.protocol import predict
    from psp_tf.model_dir import load_model

    caffemodel = write_caffemodel(str(tmp_path / "pspnet50_ADE20K.caffemodel"), "pspnet50_ADE20K_473.prototxt")
    out = str(tmp_path / "converted")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-m", "convert", "--caffemodel", caffemodel, "--output", out],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    os.remove(caffemodel)
    model = load_model(out)
    config = model.psp_config
    image = smooth_image((300, 400, 3), seed=3)
    scales = (1.0,)
    got = predict(model, image, scales=scales, batch_size=2)
    tiles = []
    want_labels, want_probs = matlab_prediction(model, image, scales, True, tiles)
    delta = np.abs(got.probabilities - want_probs).max()
    agreement = np.mean(got.labels == want_labels)
    print(f"converted pspnet50_ade20k vs MATLAB reference: max|dprob| {delta:.2e}, argmax agreement {agreement:.6f}")
    assert delta <= 0.02 and agreement >= 0.995, (delta, agreement)  # the targets
    # float32 only: predict ran each tile with its mirror (batch_size 2), the reference one at a time.
    bound = float32_prob_bound(np.abs(traced_logits(model, tiles, 2) - traced_logits(model, tiles, 1)).max(),
                           config.num_classes, len(scales))
    assert delta <= bound, (delta, bound)
    assert len(np.unique(want_labels)) > 3  # the synthetic net's predictions vary over the image
