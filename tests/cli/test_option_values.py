"""Values given through --dataset_option and --workdir are checked like every other flag: one UserError line."""

import pytest

from psp_tf.data import decode, registry
from psp_tf.errors import UserError
from psp_tf.training.config import TrainConfig, check_resume_compatible, resolve


@pytest.mark.parametrize("options,expected", [
    (dict(num_images="abc"), "num_images='abc' must be"),
    (dict(num_images=float("nan")), "num_images=nan must be"),
    (dict(num_images=1.7), "num_images=1.7 must be"),
    (dict(num_images=10**12), "num_images=1000000000000 must be"),
    (dict(seed="abc"), "seed='abc' must be"),
])
def test_synthetic_options_are_range_checked(options, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        registry.open_dataset("synthetic", None, "val", **options)


@pytest.mark.parametrize("options,expected", [
    (dict(num_classes=3, palette=5), "palette: needs 3 RGB triples, got 5"),
    (dict(num_classes=3, palette=[1, 2, 3]), "palette: needs 3 RGB triples"),
    (dict(num_classes=3, class_names=5), "class_names=5: expected names"),
])
def test_folder_options_of_the_wrong_kind_are_one_line(tmp_path, options, expected):
    from support.datasets import write_folder

    root = write_folder(str(tmp_path / "folder"), n=2)
    with pytest.raises(UserError, match=expected):
        registry.open_dataset("folder", root, "train", **options)


def test_a_url_work_directory_is_refused_not_made_relative():
    with pytest.raises(UserError, match="--workdir gs://bucket/run: work directories must be local"):
        resolve(TrainConfig(workdir="gs://bucket/run"))


def test_a_changed_dataset_option_names_the_flag_of_train_py(tmp_path):
    config = resolve(TrainConfig(workdir=str(tmp_path), dataset_options=("num_images=4",)))
    previous = dict(config.to_dict(), dataset_options=[])
    with pytest.raises(UserError, match=r"^--dataset_option="):
        check_resume_compatible(previous, config, "train_config.json")


def test_tensorflow_error_text_is_one_plain_line():
    class Fake(Exception):
        message = "{{function_node __wrapped__IteratorGetNext}} corrupted record at 142499 [Op:IteratorGetNext] name: \nmore"

    assert decode.first_line(Fake()) == "corrupted record at 142499"
