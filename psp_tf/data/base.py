"""The dataset every reader returns: file list, label space, `read(i)`, and the streams consumers read.

`read(i)` is the reference semantics (RGB uint8 image, uint8 train ids with 255 = ignore). Every
consumer reads a dataset through this one interface, whatever its storage:
  - `tf_examples()` (evaluation): (image, label, name) in dataset order, TF ops;
  - `tf_stream(slice, seed)` (training): (position, image, label) at the stream positions of one
    input pipeline (psp_tf.data.positions);
  - `examples_in_order()` (the check tool, write_tfrecords): host-side `Example`s with the image's
    stored bytes, or the UserError of each bad one.
Readers with random access (files, generated scenes) give `_tf_loader()`, from which this class
builds the streams with the same TF decode functions as `read(i)`, so all give identical arrays;
sequential storage (TFRecords) overrides the streams instead. Label mapping is a 256-entry table per
example (docs/datasets.md lists each dataset's).
"""

import contextlib
import contextvars
import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from psp_tf.data import decode, positions
from psp_tf.errors import UserError
from psp_tf.outputs import is_utf8_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


read_bytes = decode.read_bytes


def require_dir(path, what):
    """Raises a UserError naming `path` unless it is a directory."""
    if not tf.io.gfile.isdir(path):
        raise UserError(f"{path}: {what} directory not found")
    return path


def stem(path):
    """File name without directory and extension."""
    return os.path.splitext(os.path.basename(path))[0]


@dataclasses.dataclass
class Example:
    """One example read on the host (`Dataset.examples_in_order`).

    Attributes:
      name: the file stem (names predictions and TFRecord examples).
      image: uint8 [H, W, 3] RGB.
      label: uint8 [H, W] train ids (255 = ignore), or None without ground truth.
      image_bytes: the image as stored (the file's bytes; a PNG of the pixels where there is no file).
    """

    name: str
    image: np.ndarray
    label: Optional[np.ndarray]
    image_bytes: bytes


class Dataset:
    """A split of a dataset as it lies on disk.

    Attributes:
      name: the `open_dataset` name.
      split: the split name.
      examples: list of (image_path, label_path or None).
      num_classes: K; train ids are 0..K-1.
      class_names: K names.
      palette: K RGB colours.
      ignore_label: 255.
      has_labels: whether the split has ground truth.
      luts: int32 [L, 256] raw label value -> train id tables (decode.INVALID where undefined).
      lut_ids: per-example row of `luts`.
      label_format: what the layout's label files are (decode.GREY or decode.VOC_PALETTE); a label
        file of another kind is an error naming it.
    """

    ignore_label = decode.IGNORE_LABEL

    def __init__(self, name, split, examples, num_classes, class_names, palette, luts=None,
                 lut_ids=None, where="", label_format=decode.GREY):
        if not examples:
            raise UserError(f"{where or name}: split {split!r} of {name} is empty")
        labelled = [e[1] is not None for e in examples]
        if any(labelled) and not all(labelled):
            missing = examples[labelled.index(False)][0]
            raise UserError(f"{missing}: image has no label file")
        self.name, self.split, self.examples = name, split, list(examples)
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)
        self.palette = tuple(tuple(int(c) for c in p) for p in palette)
        self.has_labels = all(labelled)
        self.luts = np.asarray(luts if luts is not None else [decode.identity_lut(num_classes)],
                               np.int32).reshape(-1, 256)
        self.lut_ids = np.asarray(lut_ids if lut_ids is not None else np.zeros(len(examples)), np.int32)
        self.label_format = label_format

    def __len__(self):
        return len(self.examples)

    def __repr__(self):
        return f"<{self.name} {self.split}: {len(self)} images, {self.num_classes} classes>"

    @property
    def names(self):
        """File stems, one per example (used to name predictions)."""
        return [stem(e[0]) for e in self.examples]

    def read(self, i):
        """Reads example `i`.

        Returns:
          (image uint8 [H, W, 3] RGB, label uint8 [H, W] train ids (255 = ignore) or None).
        Raises:
          UserError: unreadable/undecodable file, a label file not of the layout's kind, size
            mismatch, or label values outside [0, K) and 255 after the dataset's mapping (the
            message names the file).
        """
        image_path, label_path = self.examples[i]
        image = decode.read_image(image_path)
        if label_path is None:
            return image, None
        raw = self._raw_label(label_path)
        ids = decode.apply_lut(tf.constant(raw, tf.int32), self.luts[self.lut_ids[i]]).numpy()
        return image, self._validated(ids, image, image_path, label_path)

    def _raw_label(self, label_path):
        """int32 [H, W] raw label values of one file (subclasses add other formats)."""
        return decode.label_array(read_bytes(label_path), label_path, self.label_format)

    def _validated(self, ids, image, image_path, label_path):
        if ids.shape != image.shape[:2]:
            raise UserError(f"{label_path}: label is {ids.shape[0]}x{ids.shape[1]} but image "
                            f"{image_path} is {image.shape[0]}x{image.shape[1]}")
        bad = (ids < 0) | ((ids >= self.num_classes) & (ids != self.ignore_label))
        if bad.any():
            raw = self._raw_label(label_path)
            if (raw[bad] == decode.INVALID).any():
                colours = decode.label_colours(read_bytes(label_path)).numpy()[bad & (raw == decode.INVALID)]
                colours = sorted({tuple(int(v) for v in c) for c in colours})[:8]
                raise UserError(f"{label_path}: colours {colours} are not in the VOC palette")
            values = sorted(set(raw[bad].tolist()))[:8]
            raise UserError(f"{label_path}: label values {values} are outside the {self.name} "
                            f"mapping to [0, {self.num_classes}) and 255")
        return ids.astype(np.uint8)

    def label_blobs(self):
        """Encoded label bytes that the graph cannot read from a file itself ('' = read the file).

        Subclasses whose labels are not PNGs (SBD .mat) return PNG-encoded raw values here.
        """
        return None

    def image_bytes(self, i, image):
        """The stored form of example `i`, whose decoded pixels are `image`: its file's bytes."""
        del image
        return read_bytes(self.examples[i][0])

    def examples_in_order(self, limit=None):
        """Yields the first `limit` (default all) examples as `Example`, or the UserError of a bad one.

        Raises:
          UserError: when the rest of the split cannot be read at all (sequential storage).
        """
        names = self.names
        for i in range(len(self) if limit is None else min(limit, len(self))):
            try:
                image, label = self.read(i)
                yield Example(names[i], image, label, self.image_bytes(i, image))
            except UserError as e:
                yield e

    def tf_examples(self, num_shards=1, shard=0, num_parallel_calls=tf.data.AUTOTUNE):
        """(image uint8 [H, W, 3], label uint8 [H, W] ([0, 0] without ground truth), name tf.string)
        in dataset order, as a tf.data.Dataset; with num_shards > 1, examples shard, shard + n, ..."""
        load, names = self._tf_loader(), tf.constant(self.names)
        indices = tf.data.Dataset.range(len(self))
        if num_shards > 1:
            indices = indices.shard(num_shards, shard)

        def make(index):
            image, label = load(index)
            return image, label, names[index]

        return indices.map(plain(make), num_parallel_calls=num_parallel_calls, deterministic=True)

    def tf_stream(self, stream_slice, seed, shuffle=True, num_parallel_calls=tf.data.AUTOTUNE, shuffle_buffer=None):
        """(position int64, image, label) at every global stream position `stream_slice` holds, in order.

        Random access: each position's example is computed directly (positions.example_index), so a
        resumed run decodes nothing it skips. `shuffle_buffer` is for sequential storage; unused here.
        """
        del shuffle_buffer
        load, num_examples = self._tf_loader(), len(self)

        def make(local):
            position = stream_slice.position(local)
            return (position, *load(positions.example_index(position, num_examples, seed, shuffle)))

        locals_ = tf.data.Dataset.range(tf.constant(stream_slice.first_local, tf.int64), tf.int64.max)
        return locals_.map(plain(make), num_parallel_calls=num_parallel_calls, deterministic=True)

    def _tf_loader(self):
        """Returns `load(index) -> (image uint8 [H, W, 3], label uint8 [H, W])` made of TF ops.

        For splits without ground truth the label is uint8 [0, 0]. Graph-safe: usable in
        `tf.data.Dataset.map`. Corrupt labels raise tf.errors.InvalidArgumentError naming the file.
        """
        image_paths = tf.constant([e[0] for e in self.examples])
        label_paths = tf.constant([e[1] or "" for e in self.examples])
        luts, lut_ids = tf.constant(self.luts), tf.constant(self.lut_ids)
        blobs = self.label_blobs()
        blobs = None if blobs is None else tf.constant(blobs)
        has_labels, label_format = self.has_labels, self.label_format

        def load(index):
            image = decode.decode_image(tf.io.read_file(image_paths[index]), image_paths[index])
            if not has_labels:
                return image, tf.zeros([0, 0], tf.uint8)
            path = label_paths[index]
            if blobs is None:
                data = tf.io.read_file(path)
            else:
                data = tf.cond(tf.strings.length(blobs[index]) > 0, lambda: blobs[index],
                               lambda: tf.io.read_file(path))
            ids = decode.decode_label(data, luts[lut_ids[index]], label_format, path)
            return image, decode.checked_label(ids, tf.shape(image), path, label_format)

        return load


def plain(fn):
    """Marks a map function as plain TF ops: autograph has nothing to convert (and misreads closures)."""
    return tf.autograph.experimental.do_not_convert(fn)


class DataProblems(UserError):
    """Problems with a split's files found while listing them; the message is the first one.

    Attributes:
      problems: every problem found, one line each naming the file (the check tool lists them all).
    """

    def __init__(self, problems):
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more: psp-check-data lists "
                                             f"them)" if more else ""))


# The list that `raise_problems` appends to instead of raising, inside `listing_problems_collected`.
_COLLECTED_PROBLEMS = contextvars.ContextVar("collected_listing_problems", default=None)


@contextlib.contextmanager
def listing_problems_collected():
    """Within it, a reader lists the files that did pair instead of raising DataProblems.

    Yields the list that every listing problem is appended to (one line each, naming the file). The
    check tool opens a split this way, so that one run scans the paired files and also names every
    unpaired, missing or doubled one; everything else keeps the readers' promise of no partial split.
    """
    found = []
    token = _COLLECTED_PROBLEMS.set(found)
    try:
        yield found
    finally:
        _COLLECTED_PROBLEMS.reset(token)


def raise_problems(problems):
    """Raises DataProblems when `problems` (a list of one-line messages) is not empty.

    Inside `listing_problems_collected` they are collected instead, and the caller goes on with the
    files that have no problem.
    """
    if not problems:
        return
    collected = _COLLECTED_PROBLEMS.get()
    if collected is None:
        raise DataProblems(problems)
    collected.extend(problems)


def pair_by_stem(image_dir, label_dir, label_suffix=".png", image_suffix=None, recursive=False):
    """Pairs images and labels with matching stems; an unmatched file on either side is an error.

    Args:
      image_dir: directory of images.
      label_dir: directory of labels, or None for a split without ground truth.
      label_suffix: what replaces the image extension to name the label.
      image_suffix: if given, only image files ending with it are taken (stem = name without it).
      recursive: descend one level of subdirectories (Cityscapes cities).
    Returns:
      sorted list of (image_path, label_path or None).
    Raises:
      DataProblems: every unpaired file and every pair of files sharing a name.
    """
    problems = []
    images = list_files(image_dir, image_suffix, recursive, problems)
    if label_dir is None:
        raise_problems(problems)
        return [(path, None) for _, path in sorted(images.items())]
    labels = list_files(label_dir, label_suffix, recursive, problems)
    problems += [f"{images[key]}: image has no label (expected {key}{label_suffix} in {label_dir})"
                 for key in sorted(set(images) - set(labels))]
    problems += [f"{labels[key]}: label has no image in {image_dir}"
                 for key in sorted(set(labels) - set(images))]
    raise_problems(problems)
    return [(images[k], labels[k]) for k in sorted(images) if k in labels]


def list_directory(folder):
    """tf.io.gfile.listdir(folder), a file name that is not UTF-8 one UserError naming it.

    TensorFlow decodes every name as UTF-8 and cannot open one that is not (a name written by another
    system's encoding): it is refused here, before any work, rather than as a traceback.
    """
    try:
        return tf.io.gfile.listdir(folder)
    except UnicodeDecodeError:
        bad = [n for n in os.listdir(folder) if not is_utf8_name(n)] if os.path.isdir(folder) else []
        name = f" ({bad[0]!r})" if bad else ""
        raise UserError(f"{folder}: holds a file name that is not valid UTF-8{name}; TensorFlow cannot "
                        f"read it: rename it") from None


def list_files(directory, suffix, recursive, problems):
    """{relative stem: path} of the files under `directory` ending with `suffix` (or image extensions).

    Two files with one stem (a.jpg and a.png) are a problem appended to `problems`: pairing by stem
    would silently drop one of them.
    """
    found = {}
    subdirs = [""]
    if recursive:
        subdirs = sorted(d.rstrip("/") for d in list_directory(directory)
                         if tf.io.gfile.isdir(os.path.join(directory, d)))
    for sub in subdirs:
        folder = os.path.join(directory, sub) if sub else directory
        for name in sorted(list_directory(folder)):
            if suffix is not None and not name.endswith(suffix):
                continue
            if suffix is None and not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            key = os.path.join(sub, name[: -len(suffix)] if suffix else os.path.splitext(name)[0])
            if key in found:
                problems.append(f"{os.path.join(folder, name)}: has the same name as {found[key]} "
                                f"(files are paired by name, so one of them would be dropped)")
                continue
            found[key] = os.path.join(folder, name)
    return found
