"""psp_tf.distribute: the strategy names, and TF_CONFIG read by TensorFlow's resolver with one-line errors."""

import json

import pytest

from psp_tf import distribute
from psp_tf.errors import UserError


def _tf_config(monkeypatch, value):
    monkeypatch.setenv("TF_CONFIG", value if isinstance(value, str) else json.dumps(value))


@pytest.mark.parametrize("value, message", [
    ("{bad", "TF_CONFIG is not valid"),
    ({"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}, "TF_CONFIG is not valid"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}}, "needs cluster.worker"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}},
     "task index 3 is outside the 1 workers"),
])
def test_multiworker_needs_a_valid_tf_config(monkeypatch, value, message):
    _tf_config(monkeypatch, value)
    with pytest.raises(UserError, match=message) as error:
        distribute.make_strategy("multiworker")
    assert "\n" not in str(error.value)


def test_multiworker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy("multiworker")


def test_num_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.num_workers() == 1
    _tf_config(monkeypatch, {"cluster": {"chief": ["h:0"], "worker": ["h:1", "h:2"], "ps": ["h:3"]},
                             "task": {"type": "worker", "index": 0}})
    assert distribute.num_workers() == 3  # the chief and the workers run the job; a parameter server does not
    _tf_config(monkeypatch, "{bad")
    with pytest.raises(UserError, match="TF_CONFIG is not valid"):
        distribute.num_workers()


def test_unknown_strategy_names_the_choices():
    with pytest.raises(UserError, match="must be one of default, mirrored, multiworker, tpu"):
        distribute.make_strategy("nccl")
