"""TFRecord writing/reading (exactly the read(i) arrays), the check CLI, and the pipeline on them."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import psp_tf.data as D
from psp_tf.cli import check_data, write_tfrecords
from psp_tf.data import check
from psp_tf.data.config import AugmentConfig
from psp_tf.presets import CAFFE_MEAN_RGB

from support import datasets as fx


PAPER = AugmentConfig(mean=CAFFE_MEAN_RGB)


def _run(main, argv, capsys):
    """A driver's exit status, stdout and stderr, run in-process."""
    code = main(["tool", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def folder(tmp_path):
    root = fx.write_folder(str(tmp_path / "folder"), n=5)
    fx.write_image(os.path.join(root, "images", "train", "img4.jpg"), fx.image(9, 30, 40))
    os.remove(os.path.join(root, "images", "train", "img4.png"))
    fx.write_grey(os.path.join(root, "labels", "train", "img4.png"), np.full((30, 40), 2, np.uint8))
    return root


def test_tfrecords_round_trip(folder, tmp_path, capsys):
    prefix = str(tmp_path / "records" / "train")
    code, _, err = _run(write_tfrecords.main, ["--dataset", "folder", "--data_dir", folder, "--split", "train",
                                               "--dataset_option", "num_classes=3", "--output", prefix,
                                               "--num_shards", "2"], capsys)
    assert code == 0 and "5/5" in err
    assert sorted(os.listdir(tmp_path / "records")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", "train.json"]
    source = D.open_dataset("folder", folder, "train", num_classes=3)
    records = D.open_dataset("tfrecord", str(tmp_path / "records"), "train")
    assert (len(records), records.num_classes, records.names) == (5, 3, source.names)
    for k, (image, label, name) in enumerate(D.eval_source(records)):
        ref_image, ref_label = source.read(k)
        np.testing.assert_array_equal(records.read(k)[0], ref_image)
        np.testing.assert_array_equal(records.read(k)[1], ref_label)
        np.testing.assert_array_equal(image.numpy(), ref_image)
        np.testing.assert_array_equal(label.numpy(), ref_label)
        assert name.numpy().decode() == source.names[k]
    report = check.scan(records)
    np.testing.assert_array_equal(report.histogram, check.scan(source).histogram)
    assert report.count == 5 and report.histogram.tolist() == [72, 48, 1248, 24]


def test_read_in_order_reads_each_record_once(folder, tmp_path, capsys, monkeypatch):
    prefix = str(tmp_path / "records" / "train")
    assert _run(write_tfrecords.main, ["--dataset", "folder", "--data_dir", folder, "--split", "train",
                                       "--dataset_option", "num_classes=3", "--output", prefix,
                                       "--num_shards", "2"], capsys)[0] == 0
    records = D.open_dataset("tfrecord", str(tmp_path / "records"), "train")
    want = {i: records.read(i) for i in range(len(records))}  # shards of 3 and 2 records
    opened, real = [], tf.data.TFRecordDataset
    monkeypatch.setattr(tf.data, "TFRecordDataset", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    fresh = D.open_dataset("tfrecord", str(tmp_path / "records"), "train")
    opened.clear()  # opening checks the shards' framing; what follows is read()'s own reading
    # In order (and one skipped, as a sharded evaluation's i, i+2, ...): each shard opened once.
    for i in (0, 2, 3, 4):
        for got, expect in zip(fresh.read(i), want[i]):
            np.testing.assert_array_equal(got, expect)
    assert opened == records.files
    # Backwards, again or in another shard: that shard is read from its start, with the same arrays.
    for i in (1, 1, 0, 2, 4, 3):
        for got, expect in zip(fresh.read(i), want[i]):
            np.testing.assert_array_equal(got, expect)
    assert len(opened) == 2 + 5  # all but 2 (read on from 0) start their shard again
    # Each thread keeps its own place (the evaluator reads ahead in one while --show_dir reads in another).
    import threading
    fresh.read(0)
    opened.clear()
    reader = threading.Thread(target=lambda: [fresh.read(i) for i in (3, 4)])
    reader.start()
    reader.join()
    fresh.read(1)
    assert opened == [records.files[1]]  # the thread's shard; the main thread read on from 0


@pytest.mark.slow  # ~4 s quiet: five pipelines built and run
def test_tfrecord_train_pipeline_is_resumable_and_sharded(folder, tmp_path):
    source = D.open_dataset("folder", folder, "train", num_classes=3)
    D.tfrecords.write_tfrecords(source, str(tmp_path / "r" / "train"), 3, progress=False)
    records = D.open_dataset("tfrecord", str(tmp_path / "r"), "train")
    pipe = lambda **kw: [(i.numpy(), l.numpy()) for i, l in D.train_pipeline(  # noqa: E731
        records, 17, 2, seed=1, shuffle_buffer=4, augment=PAPER, **kw).take(kw.pop("steps", 7))]
    run, again, resumed = pipe(), pipe(), pipe(start_step=5)
    for a, b in zip(run, again):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(run[5:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    halves = [pipe(input_context=tf.distribute.InputContext(2, i, 2)) for i in range(2)]
    for step in range(3):
        np.testing.assert_array_equal(np.concatenate([halves[0][step][1], halves[1][step][1]]), run[step][1])


def test_writer_stops_on_bad_data_leaving_nothing(folder, tmp_path, capsys):
    fx.write_grey(os.path.join(folder, "labels", "train", "img3.png"), np.full((fx.H, fx.W), 7, np.uint8))
    prefix = str(tmp_path / "out" / "train")
    code, _, err = _run(write_tfrecords.main, ["--dataset", "folder", "--data_dir", folder, "--split",
                                               "train", "--dataset_option", "num_classes=3", "--output", prefix,
                                               "--num_shards", "2", "--quiet"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ") and "img3.png: label values [7]" in err
    # The first shard (images 0-1) was complete, but a failed run leaves nothing behind.
    assert os.listdir(tmp_path / "out") == []
    code, _, err = _run(write_tfrecords.main, ["--dataset", "imagenet", "--split", "x", "--output", prefix],
                        capsys)
    assert code == 2 and err.startswith("error: ") and "--dataset" in err and "imagenet" in err


def test_check_reports_histogram_and_problems(folder, tmp_path, capsys):
    fx.write_grey(os.path.join(folder, "labels", "train", "img1.png"), np.full((fx.H, fx.W), 9, np.uint8))
    code, out, _ = _run(check_data.main, ["--dataset", "folder", "--data_dir", folder, "--split", "train",
                                          "--dataset_option", "num_classes=3"], capsys)
    assert code == 1
    assert "folder train: 5 images scanned of 5" in out and "6x8 to 30x40" in out
    # img0, img2, img3: FOLDER_RAW has per row 3 x 0, 2 x 1, 2 x 2, 1 x 255; img4 is 30x40 of 2.
    rows = {line.split()[0]: line.split()[-2] for line in out.splitlines() if line.startswith("  ") and
            line.split()[0].isdigit()}
    assert rows == {"0": "54", "1": "36", "2": "1,236", "255": "18"}
    assert "problems: 1" in out and "img1.png: label values [9] are outside" in out
    code, _, err = _run(check_data.main, ["--dataset", "folder", "--data_dir", folder, "--split", "train"], capsys)
    assert code == 2 and err == ("error: folder: option num_classes (a positive integer) is required "
                                 "(--dataset_option num_classes=K)\n")


@pytest.mark.slow  # ~2.5 s quiet: the synthetic renderer and the sample pipeline
def test_check_writes_coloured_samples(tmp_path, capsys):
    out_dir = str(tmp_path / "samples")
    code, out, _ = _run(check_data.main, ["--dataset", "synthetic", "--split", "val", "--dataset_option",
                                          "num_images=3", "--samples", "2", "--samples_dir", out_dir,
                                          "--crop", "97"], capsys)
    assert code == 0 and "problems: 0" in out and "3 images scanned" in out
    samples = [cv2.imread(os.path.join(out_dir, f"sample_00{k}.png"))[..., ::-1] for k in range(2)]
    assert samples[1].shape == (97, 194, 3)
    colours = {tuple(c) for s in samples for c in s[:, 97:].reshape(-1, 3)}
    allowed = {tuple(c) for c in D.synthetic.PALETTE} | {(255, 255, 255)}
    assert colours <= allowed and len(colours) >= 2


def test_voc_aug_pipeline_reads_sbd_mat_in_graph(tmp_path):
    ids = [f"2008_00000{i}" for i in range(1, 5)]
    fx.write_voc(str(tmp_path), train=ids[:1], val=ids[1:2], sbd_only=ids[2:])
    fx.write_sbd(str(tmp_path), train=ids[2:3], val=ids[3:])
    ds = D.open_dataset("voc_aug", str(tmp_path), "train_aug")
    for k, (image, label, _) in enumerate(D.eval_source(ds)):
        np.testing.assert_array_equal(label.numpy(), ds.read(k)[1])
    _, label = next(iter(D.train_pipeline(ds, 9, 3, seed=0, augment=PAPER)))
    assert set(np.unique(label.numpy())) <= set(fx.SBD_RAW.ravel()) | set(fx.VOC_RAW.ravel())
