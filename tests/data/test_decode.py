"""The shared image decoder against OpenCV's imread, bit for bit, eagerly and inside tf.data / tf.function.

The author's training data layer read images with OpenCV's imread and the evaluation with MATLAB's
imread; both use libjpeg's accurate integer DCT and do not apply EXIF orientation. The reference here
is `cv2.imdecode(data, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION)` (OpenCV >= 3.1 rotates by EXIF
unless told not to). Comparisons are exact: decoding is integer arithmetic, no tolerance applies.
"""

import io
import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import psp_tf.data as D
from psp_tf.data import decode, tfrecords
from psp_tf.errors import UserError

from support import datasets as fx

REFERENCE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
SAMPLINGS = {"444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
             "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420}


def photo(h=61, w=83, seed=0):
    """Smooth colour gradients plus noise, an odd size: every DCT block and the MCU edges matter."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([128 + 100 * np.sin(x / 7 + y / 11), 128 + 90 * np.cos(x / 5), 128 + 60 * np.sin(y / 3)], -1)
    rgb += np.random.default_rng(seed).normal(0, 20, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def opencv(data):
    """OpenCV's reading of encoded bytes as uint8 RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), REFERENCE_FLAGS)
    return bgr[..., ::-1]


def jpeg(rgb, quality=90, sampling="420", progressive=False):
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[sampling],
              cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    assert ok
    return data.tobytes()


def pil_bytes(image, fmt="PNG", **options):
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


_in_function = tf.function(decode.decode_image)


def _in_dataset(data):
    return tf.data.Dataset.from_tensors(tf.constant(data)).map(decode.decode_image).get_single_element()


def assert_decodes_as_opencv(data):
    """Eagerly, in a tf.function and in a tf.data map: all bit-identical to OpenCV."""
    want = opencv(data)
    np.testing.assert_array_equal(decode.image_array(data, "x"), want)
    np.testing.assert_array_equal(_in_function(tf.constant(data)).numpy(), want)
    np.testing.assert_array_equal(_in_dataset(data).numpy(), want)


JPEG_CASES = [(q, s) for q in (50, 75, 90, 95, 100) for s in SAMPLINGS]


@pytest.mark.parametrize("quality,sampling", JPEG_CASES)
def test_jpeg_matches_opencv_bit_for_bit(quality, sampling):
    data = jpeg(photo(), quality, sampling)
    assert_decodes_as_opencv(data)


def test_greyscale_and_progressive_jpeg_match_opencv():
    grey = cv2.imencode(".jpg", photo()[..., 1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert_decodes_as_opencv(grey)
    assert (decode.image_array(grey, "x") == decode.image_array(grey, "x")[..., :1]).all()  # replicated
    assert_decodes_as_opencv(jpeg(photo(seed=1), 90, "420", progressive=True))
    assert_decodes_as_opencv(jpeg(photo(seed=2), 100, "444", progressive=True))


@pytest.mark.parametrize("quality", [75, 95, 100])
def test_tensorflows_default_decode_is_not_what_the_author_read(quality):
    # tf.io.decode_image has no dct_method: it uses libjpeg's fast integer DCT, which is what the
    # pipelines used before; this shows a bit-exact comparison with OpenCV detects that decode.
    data = jpeg(photo(), quality, "420")
    fast = tf.io.decode_image(data, channels=3).numpy()
    assert (fast != opencv(data)).mean() > 0.3
    assert (tf.io.decode_jpeg(data, channels=3).numpy() != opencv(data)).any()


def test_exif_orientation_is_not_applied():
    rgb = photo(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)
    # OpenCV's default imread rotates; the author's tools (and the reference flags) do not.
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (30, 20, 3)
    assert decode.image_array(data, "x").shape == (20, 30, 3)
    assert_decodes_as_opencv(data)


def _png_cases():
    rgb = photo(20, 30)
    a16 = np.random.default_rng(1).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    palette = Image.fromarray(rgb[..., 0] % 16, "P")
    palette.putpalette(np.random.default_rng(2).integers(0, 256, 48).tolist())
    return {
        "rgb": cv2.imencode(".png", rgb)[1].tobytes(),
        "grey": cv2.imencode(".png", rgb[..., 0])[1].tobytes(),
        "rgba": cv2.imencode(".png", np.dstack([rgb, rgb[..., 0]]))[1].tobytes(),
        "grey_alpha": pil_bytes(Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA")),
        "palette": pil_bytes(palette),
        "palette_transparency": pil_bytes(palette, transparency=bytes([0, 128] + [255] * 14)),
        "grey_1bit": pil_bytes(Image.fromarray(rgb[..., 0] > 128)),
        # 16-bit images are read as OpenCV's imread reads them: the high byte of each sample.
        "rgb_16bit": cv2.imencode(".png", a16)[1].tobytes(),
        "grey_16bit": cv2.imencode(".png", a16[..., 0])[1].tobytes(),
        "bmp": cv2.imencode(".bmp", rgb)[1].tobytes(),
    }


@pytest.mark.parametrize("case", sorted(_png_cases()))
def test_png_and_bmp_match_opencv(case):
    data = _png_cases()[case]
    assert_decodes_as_opencv(data)
    if case == "rgb_16bit":  # the high byte, stated outright
        a16 = np.asarray(tf.io.decode_png(data, dtype=tf.uint16))
        np.testing.assert_array_equal(decode.image_array(data, "x"), (a16 >> 8).astype(np.uint8))


def test_cmyk_jpeg_is_within_one_level_of_opencv():
    # A known limit: TensorFlow converts CMYK to RGB itself (rounding differently from OpenCV) and
    # gives no CMYK output to convert from, so such rare files may differ by one grey level.
    data = pil_bytes(Image.fromarray(photo()).convert("CMYK"), "JPEG", quality=90)
    diff = np.abs(decode.image_array(data, "x").astype(int) - opencv(data).astype(int))
    assert diff.max() <= 1


def test_every_path_reads_the_same_pixels_as_opencv(tmp_path):
    """Dataset.read, eval_source, TFRecords (both readers) and predict's reader, on ADE20K JPEGs."""
    from psp_tf.inference.files import read_image

    root = fx.write_ade(str(tmp_path / "ade"), n_train=3)
    paths = []
    for k, (quality, sampling) in enumerate([(75, "420"), (95, "422"), (100, "444")]):
        path = os.path.join(root, "images", "training", f"ADE_train_{k + 1:08d}.jpg")
        with open(path, "wb") as f:
            f.write(jpeg(photo(fx.H, fx.W, seed=k), quality, sampling))
        paths.append(path)
    ds = D.open_dataset("ade20k", root, "training")
    want = [opencv(open(p, "rb").read()) for p in paths]
    tfrecords.write_tfrecords(ds, str(tmp_path / "records" / "training"), 2, progress=False)
    records = D.open_dataset("tfrecord", str(tmp_path / "records"), "training")
    for k, (image, _, _) in enumerate(D.eval_source(ds)):
        np.testing.assert_array_equal(image.numpy(), want[k])
        np.testing.assert_array_equal(ds.read(k)[0], want[k])
        np.testing.assert_array_equal(records.read(k)[0], want[k])
        np.testing.assert_array_equal(read_image(paths[k]), want[k])
    for k, (image, _, _) in enumerate(D.eval_source(records)):
        np.testing.assert_array_equal(image.numpy(), want[k])


def test_predict_reads_tiff_and_webp_through_opencv_without_rotation(tmp_path):
    from psp_tf.inference.files import read_image

    rgb = photo(20, 30)
    for ext in (".tif", ".webp"):
        path = str(tmp_path / f"a{ext}")
        assert cv2.imwrite(path, rgb[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])
        np.testing.assert_array_equal(read_image(path), opencv(open(path, "rb").read()))
    with open(tmp_path / "bad.tif", "wb") as f:
        f.write(b"II*\x00 truncated")
    with pytest.raises(UserError, match="bad.tif: cannot decode image"):
        read_image(str(tmp_path / "bad.tif"))
    with pytest.raises(UserError, match="missing.jpg: cannot read file"):
        read_image(str(tmp_path / "missing.jpg"))


@pytest.mark.parametrize("mode,bits", [("P", 8), ("L", 8), ("1", 1)])
def test_bmps_tensorflow_misreads_are_refused(tmp_path, mode, bits):
    # TensorFlow reads an 8-bit BMP's palette indices as grey levels (OpenCV applies the palette):
    # such files are refused, in read(i) and in the pipeline, rather than read differently.
    root = fx.write_folder(str(tmp_path), n=2)
    path = os.path.join(root, "images", "train", "img1.bmp")
    os.remove(os.path.join(root, "images", "train", "img1.png"))
    Image.fromarray(fx.image(1)).convert(mode).save(path, "BMP")
    message = f"{path}: {bits}-bit BMP; only 24- and 32-bit BMPs decode as OpenCV reads them (save it as PNG)"
    ds = D.open_dataset("folder", root, "train", num_classes=3)
    with pytest.raises(UserError, match=re.escape(message)):
        ds.read(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        list(D.eval_source(ds))
    assert_decodes_as_opencv(open(os.path.join(root, "images", "train", "img0.png"), "rb").read())
    fx.write_image(path, fx.image(1))  # 24-bit
    np.testing.assert_array_equal(ds.read(1)[0], fx.image(1))


def test_a_dataset_image_that_only_opencv_reads_is_refused(tmp_path):
    # predict reads TIFF through OpenCV, but a dataset image must decode in the tf.data graph too.
    root = fx.write_folder(str(tmp_path), n=1)
    path = os.path.join(root, "images", "train", "img0.png")
    with open(path, "wb") as f:
        f.write(cv2.imencode(".tif", fx.image(0))[1].tobytes())
    with pytest.raises(UserError, match=re.escape(f"{path}: cannot decode image")):
        D.open_dataset("folder", root, "train", num_classes=3).read(0)
