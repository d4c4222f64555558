"""psp_tf.convert.run's SavedModel check: the reloaded SavedModel's logits against the model's."""

import numpy as np
import pytest

from support.networks import randomize_bn
from psp_tf import build_pspnet
from psp_tf.convert import run, verify

pytestmark = pytest.mark.slow  # SavedModel writes and reloads, ~2-4 s each


@pytest.fixture(scope="module")
def tiny():
    return randomize_bn(build_pspnet("tiny"), 0), verify.fixed_test_image(137, 137)


def test_savedmodel_check_runs_the_model_unless_given_its_logits(tiny, tmp_path):
    model, image = tiny
    rel = run.export_savedmodel(model, str(tmp_path / "a"), image)
    assert 0 <= rel <= verify.MAX_REL_DIFF
    logits = model.predict(image[None].astype(np.float32), verbose=0)
    assert run.export_savedmodel(model, str(tmp_path / "b"), image, logits) <= verify.MAX_REL_DIFF


def test_savedmodel_check_fails_on_logits_that_are_not_the_models(tiny, tmp_path):
    model, image = tiny
    logits = model.predict(image[None].astype(np.float32), verbose=0)
    wrong = logits + 1e-3 * np.std(logits)  # 10x the check's bound: the given logits are really compared
    with pytest.raises(run.VerificationFailed, match="SavedModel"):
        run.export_savedmodel(model, str(tmp_path / "c"), image, wrong)


def test_savedmodel_check_refuses_logits_of_another_shape(tiny, tmp_path):
    model, image = tiny
    logits = model.predict(image[None].astype(np.float32), verbose=0)
    with pytest.raises(ValueError, match="shape"):  # [H, W, K] would broadcast against [1, H, W, K]
        run.export_savedmodel(model, str(tmp_path / "d"), image, logits[0])
