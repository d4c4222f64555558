"""Segment image files with the author's protocol: colour masks, label PNGs and overlays (psp-predict).

For every image `<stem>.<ext>` `predict_files(PredictConfig(...))` writes `<stem>.png` (colour mask with
the preset's palette), `<stem>_labels.png` (train ids as grey values) and, with overlay, `<stem>_overlay.png`
(the image under the mask, with a legend of the classes present). `psp_tf.predict(model, image)` is the
library call for arrays.

Images are streamed: one is decoded, predicted and written at a time, each output file moved into
the output only once complete. A run that stops (an error, Ctrl-C, a kill) keeps the images it
finished; running it again skips every image whose outputs are all present and does the rest
(overwrite redoes them all). Hidden files (names starting with '.') in an input directory are skipped.

What made the outputs is recorded beside them in `predict.json` (the weights' sha256, scales, flip,
precision, and the images it speaks for), so a rerun with other weights or settings refuses to mix its
results with the old ones (one error line; --overwrite redoes every image, first removing the other
run's outputs of the images it lists). A run holds a lock on --output: a second one at once is refused.
"""

import json
import os
import stat

import numpy as np

from psp_tf.data import decode
from psp_tf.errors import UserError
from psp_tf.evaluation.protocol import parse_scales, predict
from psp_tf.evaluation.report import encode_png
from psp_tf.progress import Progress
from psp_tf.model_dir import load_model, read_config, weights_digest
from psp_tf.outputs import atomic_file, exclusive_directory, is_utf8_name, refuse_overlap, safe_name, sweep
from psp_tf.visualize import colorize, overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# What each image's outputs are called: <stem><suffix>.png.
OUTPUT_SUFFIXES = {"colour": "", "labels": "_labels", "overlay": "_overlay"}
# The first bytes of every format in IMAGE_EXTENSIONS: a cheap check of all inputs before any output.
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _require_regular(path):
    """Raises a UserError naming `path` unless it is (a symlink to) a regular file; opens nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:  # a symlink loop (ELOOP), a dangling symlink, no permission
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
        raise UserError(f"--input {path} is {kind}, not an image file")


def list_inputs(path):
    """The image files named by --input (a file, or a directory's images sorted by name).

    Raises:
      UserError: nothing there, no images in the directory, or an entry that is not a regular file
        (a directory or a FIFO named *.jpg, a symlink loop): never opened, so never a hang.
    """
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise UserError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the directory")
    elif not os.path.lexists(path):
        raise UserError(f"--input {path}: no such file or directory")
    else:
        files = [path]
    for f in files:
        if not is_utf8_name(f):
            raise UserError(f"--input {f!r}: the file name is not valid UTF-8 (TensorFlow cannot open it); "
                            f"rename it")
        _require_regular(f)
    return files


def plan_outputs(files, output_dir, overlay=False):
    """[{kind: path}] per input file: the outputs it gets in `output_dir`.

    Raises:
      UserError: a name that is no plain file name, or two inputs that would write the same output
        (`a.jpg` + `a.png`, or `a.jpg` + `a_labels.jpg`).
    """
    kinds = [k for k in OUTPUT_SUFFIXES if overlay or k != "overlay"]
    writer = {}
    plan = []
    for path in files:
        stem = safe_name(os.path.splitext(os.path.basename(path))[0], f"--input {path}")
        outputs = {k: path for k, path in _image_outputs(output_dir, stem).items() if k in kinds}
        for out in outputs.values():
            name = os.path.basename(out)
            if name in writer:
                raise UserError(f"--input: {writer[name]} and {path} would both write {name} (outputs are "
                                f"named <name>.png, <name>_labels.png, <name>_overlay.png); rename one")
            writer[name] = path
        plan.append(outputs)
    return plan


def sniff_image(path):
    """Raises a UserError naming `path` unless it starts like an image (reads 12 bytes, never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO swapped in cannot hang us
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"--input {path} is not a regular file")
            head = os.read(fd, 12)
        finally:
            os.close(fd)
    except OSError as e:
        raise UserError(f"--input {path}: cannot read it ({e.strerror})") from None
    if not (head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        raise UserError(f"{path}: cannot decode image (truncated or not an image)")


def read_image(path):
    """uint8 RGB [H, W, 3] (grey replicated, alpha dropped); UserError naming an undecodable file.

    The decoder of training and evaluation (psp_tf.data.decode): accurate-DCT JPEG, no EXIF rotation.
    """
    return decode.read_image(path, opencv_formats=True)


MANIFEST = "predict.json"  # in --output: the settings that made its outputs


def _settings(config, scales):
    """What decides an image's outputs (not --batch_size, which never changes a result)."""
    read_config(config.weights)  # a directory that is no model is named as load_model names it
    try:
        digest = weights_digest(config.weights)
    except OSError as e:
        raise UserError(f"--weights {config.weights}: cannot read it ({e.strerror})") from None
    return {"weights_sha256": digest, "scales": [float(s) for s in scales], "flip": bool(config.flip),
            "precision": config.precision}


def _recorded(output):
    """The settings `predict.json` in `output` records; None without one; UserError if unreadable."""
    path = os.path.join(output, MANIFEST)
    if not os.path.lexists(path):
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO there would block the open
            raise ValueError("not a regular file")
        with open(path) as f:
            recorded = json.load(f)
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UserError(f"--output {output}: {MANIFEST} is unreadable ({e}); pass --overwrite to redo "
                        f"every image") from None
    return recorded


def _differences(recorded, settings, weights):
    """The names of the settings in which `recorded` differs from this run's; None without a record."""
    if recorded is None:
        return None
    differ = [key for key in settings if recorded.get(key) != settings[key]]
    if "weights_sha256" in differ and recorded.get("weights_sha256") == _whole_directory_digest(weights):
        differ.remove("weights_sha256")  # a record from before the digest covered the model files only
    return [key.replace("_sha256", "") for key in differ]


def _whole_directory_digest(weights):
    try:
        return weights_digest(weights, names=None)
    except OSError as e:
        raise UserError(f"--weights {weights}: cannot read it ({e.strerror})") from None


def _listed_images(record):
    """The image names (output stems) a record speaks for: [] for none or a record from before the list."""
    images = (record or {}).get("images")
    return [s for s in images if isinstance(s, str) and s == os.path.basename(s)] if isinstance(images, list) else []


def _image_outputs(output, stem):
    """{kind: path} of one image's outputs in `output` (its overlay's path included)."""
    return {kind: os.path.join(output, stem + suffix + ".png") for kind, suffix in OUTPUT_SUFFIXES.items()}


def _stem(outputs):
    return os.path.basename(outputs["colour"])[:-len(".png")]


def _done(outputs):
    """Whether all of an image's outputs are there (each was moved in only once complete)."""
    return all(os.path.isfile(path) for path in outputs.values())


def _remove_outputs(plan):
    for outputs in plan:
        for path in outputs.values():
            if os.path.lexists(path) and not os.path.isdir(path):
                os.remove(path)


def _write_outputs(outputs, image, labels, model_config):
    pictures = {"colour": lambda: colorize(labels, model_config.palette)[..., ::-1],
                "labels": lambda: labels.astype(np.uint8),
                "overlay": lambda: overlay(image, labels, model_config.palette, model_config.class_names)[..., ::-1]}
    for kind, path in outputs.items():
        # recover=False: predict_files swept --output once; a listing per file would be quadratic.
        # follow_symlink=False: a link planted in --output is replaced, never written through.
        with atomic_file(path, overwrite=True, recover=False, follow_symlink=False) as f:
            f.write(encode_png(pictures[kind](), path))


def predict_files(config):
    """Segments the images `config.input` names into `config.output` (see the module docstring).

    The run holds an exclusive lock on `config.output` (created for it, and removed again if the run
    leaves it empty), so two runs at once cannot mix their outputs.

    Args:
      config: psp_tf.inference.config.PredictConfig.

    Raises:
      UserError: a bad input, output or weights directory, found before any output is written (an
        image that fails to decode late stops the run after the images before it are complete), or
        another run using `config.output`.
    """
    scales = parse_scales(config.scales)
    refuse_overlap([("--output", config.output)], [("--input", config.input), ("--weights", config.weights)])
    if os.path.lexists(config.output) and not os.path.isdir(config.output):
        raise UserError(f"--output {config.output} exists and is not a directory")
    files = list_inputs(config.input)
    if len(files) > 1 or files[0] != config.input:  # a directory's entries: each may be a link elsewhere
        refuse_overlap([("--output", config.output)], [("--input", f) for f in files])
    plan = plan_outputs(files, config.output, config.overlay)
    for path in files:
        sniff_image(path)  # fail on a bad file before any output, without holding decoded images
    settings = _settings(config, scales)  # reads the weights once, before TensorFlow loads them
    with exclusive_directory(config.output, "another psp-predict run: wait for it to end, or choose another "
                                            "--output"):
        return _predict_into(config, scales, files, plan, settings)


def _other_runs_outputs(config, settings, plan):
    """What another run left in --output: (its record or None, the outputs to remove before this
    run's record is written, [] when nothing is to go).

    The images predict.json lists (every image a run with its settings was to write) and this run's
    images, whose mask and labels are in --output, are earlier work to compare with, whether or not
    this run writes overlays: predict.json speaks for them, so outputs made with other settings never
    mix. --overwrite removes every kind of them, overlays included. Other files are never touched,
    whatever their names (a record from before the list speaks for this run's images only).

    Raises:
      UserError: outputs made with other settings, or with no readable record, and no --overwrite.
    """
    try:
        previous, problem = _recorded(config.output), None
    except UserError as e:
        previous, problem = None, e
    listed = [_image_outputs(config.output, stem) for stem in _listed_images(previous)]
    present = [o for o in listed + plan if _done({k: o[k] for k in ("colour", "labels")})]
    done = len({_stem(o) for o in present})
    if problem is not None and done and not config.overwrite:
        raise problem
    differences = _differences(previous, settings, config.weights) if done else []
    if differences is None and done and not config.overwrite:
        raise UserError(f"--output {config.output} holds outputs of {done} image(s) but no {MANIFEST} "
                        f"saying which weights and settings made them: pass --overwrite to redo them, or "
                        f"choose another --output")
    if differences and not config.overwrite:
        raise UserError(f"--output {config.output} holds outputs made with another {' and '.join(differences)} "
                        f"({MANIFEST}): pass --overwrite to redo them, or choose another --output")
    if not (config.overwrite and differences != []):
        return previous, []
    return previous, present + [_image_outputs(config.output, _stem(outputs)) for outputs in plan]


def _record(settings, previous, plan, weights):
    """This run's predict.json: its settings and the images it speaks for (this run's, and those of an
    earlier run with the same settings)."""
    same = previous is not None and not _differences(previous, settings, weights)
    images = set(_listed_images(previous) if same else []) | {_stem(o) for o in plan}
    return {**settings, "images": sorted(images)}


def _predict_into(config, scales, files, plan, settings):
    previous, stale = _other_runs_outputs(config, settings, plan)
    todo = [(path, outputs) for path, outputs in zip(files, plan) if config.overwrite or not _done(outputs)]
    if len(todo) < len(files):
        print(f"{len(files) - len(todo)} of {len(files)} image(s) already done in {config.output}: skipped "
              f"(--overwrite redoes them)")
    if not todo:
        return 0
    model = load_model(config.weights, precision=config.precision)
    sweep(config.output)  # what a killed run left there
    record = _record(settings, previous, plan, config.weights)
    recorded = previous == record  # a rerun with the same settings and images leaves predict.json as it is
    progress = Progress(len(todo), unit="img", lines=0)  # a log gets the per-image lines above
    for k, (path, outputs) in enumerate(todo):
        image = read_image(path)
        # Labels only: the full-size [H, W, K] probabilities (7.2 GB for a 12-megapixel ADE20K photo)
        # are never needed here, and the strips of the protocol never hold them.
        result = predict(model, image, scales=scales, flip=config.flip, batch_size=config.batch_size,
                         probabilities=False)
        if not recorded:  # with the first image's outputs: a run that writes nothing leaves nothing
            # Another run's outputs go just before the new record is written: an interrupted overwrite
            # must not leave them beside it, to be skipped as this run's by the next rerun; and a first
            # image that fails to decode or predict must leave them as they were.
            _remove_outputs(stale)
            with atomic_file(os.path.join(config.output, MANIFEST), "w", overwrite=True, recover=False,
                             follow_symlink=False) as f:
                json.dump(record, f, indent=1)
            recorded = True
        _write_outputs(outputs, image, result.labels, model.psp_config)
        print(f"{path}: {image.shape[0]}x{image.shape[1]}, classes {[int(v) for v in np.unique(result.labels)]}")
        progress.update(k + 1)
    progress.close()
    print(f"{len(todo)} image(s) written to {config.output}")
    return 0
