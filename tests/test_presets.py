"""Presets: the released networks' facts, overrides and their errors."""

import pytest

from psp_tf.presets import PRESETS, PSPNetConfig, get_preset, pyramid_bins_problem, size_pair


def test_released_presets_carry_the_authors_facts():
    ade = get_preset("pspnet50_ade20k")
    assert (ade.depth, ade.conv3_stride_on, ade.crop_size, ade.base_size, ade.num_classes) == (
        50, "reduce", (473, 473), 512, 150)
    assert ade.class_names[0] == "wall" and ade.palette[0] == (120, 120, 120)
    assert ade.paper.single_scale_miou == 41.68 and ade.paper.multi_scale_pixel_acc == 80.76
    city = get_preset("pspnet101_cityscapes")
    assert (city.depth, city.conv3_stride_on, city.crop_size, city.base_size, city.num_classes) == (
        101, "3x3", (713, 713), 2048, 19)
    assert city.paper.single_scale_miou == 79.70 and city.paper.split == "val"
    voc = get_preset("pspnet101_voc2012")
    assert voc.num_classes == 21 and voc.palette[15] == (192, 128, 128) and voc.paper.multi_scale_miou == 85.41
    for preset in PRESETS.values():
        assert preset.mean == (123.68, 116.779, 103.939)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'pspnet18'.*pspnet101_cityscapes.*tiny"):
        get_preset("pspnet18")


def test_unknown_override_lists_the_valid_keys():
    with pytest.raises(ValueError, match="unknown override key.*colour.*valid keys:.*crop_size"):
        get_preset("tiny", colour=3)


def test_overrides_are_validated():
    assert get_preset("tiny", crop_size=89).crop_size == (89, 89)
    assert get_preset("pspnet50_ade20k", depth=152).stage_blocks == (3, 8, 36, 3)
    changed = get_preset("pspnet50_ade20k", num_classes=5)
    assert len(changed.class_names) == 5 and len(changed.palette) == 5
    with pytest.raises(ValueError, match="stem='vgg'"):
        get_preset("tiny", stem="vgg")
    with pytest.raises(ValueError, match="depth=34"):
        get_preset("pspnet50_ade20k", depth=34)
    with pytest.raises(ValueError, match="3 classes but 4 names"):
        get_preset("tiny", num_classes=3, class_names=("a", "b", "c", "d"), palette=((0, 0, 0),) * 3)


def test_a_config_built_in_code_with_lists_is_taken_as_tuples():
    # As JSON and hand-written code give them: lists, numpy ints. The config is frozen and hashable.
    import numpy as np

    mine = PSPNetConfig(name="mine", dataset="folder", num_classes=2, class_names=["a", "b"],
                        palette=[[0, 0, 0], [np.int64(9), 9, 9]], bins=[1, 2, 3, 6], mean=[1.0, 2.0, 3.0],
                        blocks=[1, 1, 1, 1], crop_size=[41, 41], width=16, stem_width=8, ppm_channels=8,
                        head_channels=16, aux_channels=8)
    config = get_preset(mine)
    assert config.class_names == ("a", "b") and config.palette == ((0, 0, 0), (9, 9, 9))
    assert config.bins == (1, 2, 3, 6) and config.mean == (1.0, 2.0, 3.0) and config.crop_size == (41, 41)
    hash(config)
    with pytest.raises(ValueError, match="palette must be a list of"):
        get_preset(PSPNetConfig(name="bad", dataset="folder", num_classes=1, class_names=["a"], palette=[[0, 0, 256]]))


def test_package_attributes_resolve_lazily():
    import psp_tf
    import psp_tf.data

    assert psp_tf.build_pspnet.__module__ == "psp_tf.model" and psp_tf.get_preset is get_preset
    assert psp_tf.data.open_dataset.__module__ == "psp_tf.data.registry"
    assert callable(psp_tf.load_model) and callable(psp_tf.load_caffe_weights) and callable(psp_tf.predict)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        psp_tf.nothing


def test_size_pair_and_the_one_pyramid_bin_check():
    assert size_pair(473) == (473, 473) and size_pair([89, 185]) == (89, 185)
    assert get_preset("tiny", crop_size=[89, 185]).crop_size == (89, 185)
    assert pyramid_bins_problem(473, (1, 2, 3, 6)) is None and pyramid_bins_problem((89, 185), (1, 2, 3, 6)) is None
    # 97 -> a 13x13 feature map: 13 is not a multiple of 2 (the first bin that fails is named).
    assert pyramid_bins_problem(97, (1, 2, 3, 6)).startswith(
        "97x97 gives a 13x13 feature map, which does not divide into 2x2 pyramid bins")
    assert pyramid_bins_problem(97, (1,)) is None
    assert "smaller than" in pyramid_bins_problem(8, (1,))


def test_config_dict_round_trip():
    for preset in PRESETS.values():
        assert PSPNetConfig.from_dict(preset.to_dict()) == preset
    with pytest.raises(ValueError, match="unknown config key"):
        PSPNetConfig.from_dict({"name": "x", "bogus": 1})
