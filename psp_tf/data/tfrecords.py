"""TFRecord shards of any dataset (for TPUs and large runs), and the `tfrecord` dataset that reads them.

Each record keeps the image file's original bytes and the label as a lossless grey PNG of the train
ids after the dataset's mapping, so reading back gives exactly `read(i)`. `<prefix>.json` beside
the shards carries the label space and the shard sizes. Paths may be local or gs:// (tf.io.gfile).
"""

import json
import os
import re
import threading

import numpy as np
import tensorflow as tf

from psp_tf.data import base, decode, positions
from psp_tf.errors import UserError
from psp_tf.outputs import StagedOutput, absolute, atomic_file, safe_name, sweep
from psp_tf.progress import Progress

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string),
    "name": tf.io.FixedLenFeature([], tf.string),
}


def shard_path(prefix, shard, num_shards):
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize_example(example):
    """One record of a `base.Example`: stored image bytes, PNG label of train ids (b'' without ground
    truth), name."""
    label_bytes = b"" if example.label is None else decode.encode_label_png(example.label)
    features = {"image": _bytes_feature(example.image_bytes), "label": _bytes_feature(label_bytes),
                "name": _bytes_feature(example.name.encode())}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_shard(output, examples, count, on_example):
    """Writes the next `count` of `examples` (an iterator) into the staging file of `output`.

    Raises:
      UserError: a bad example (the readers name its file), or the output refuses the write.
    """
    try:
        with tf.io.TFRecordWriter(output.tmp) as writer:
            for _ in range(count):
                example = next(examples)
                if isinstance(example, UserError):  # bad data stops the writer
                    raise example
                writer.write(serialize_example(example))
                on_example()
    except tf.errors.OpError as e:
        raise UserError(f"cannot write {output.path}: {e.message}") from None


def _old_shards(prefix):
    """The shard paths the set now at `prefix` lists, if named as this writer names them (so a
    hand-edited .json cannot make a rerun delete other files); [] when there is no readable set."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-\d{5}-of-\d{5}(\.prev)?\.tfrecord")
    try:
        files = [s["file"] for s in json.loads(base.read_bytes(prefix + ".json"))["shards"]]
    except (UserError, ValueError, KeyError, TypeError):
        return []
    return [os.path.join(os.path.dirname(prefix), f) for f in files if isinstance(f, str) and pattern.fullmatch(f)]


def _keep_old_set_readable(prefix, old, new):
    """Before new shards replace same-named old ones, hard-links those under `.prev` names and points
    the old .json at them: a kill while the new set moves in leaves the old set whole and readable.

    Returns the old set's shard paths after the change (to delete once the new .json is in).
    """
    clash = [path for path in old if path in new]
    if not clash or "://" in prefix:
        return old  # gs:// has no hard links: there the shards move in, then the .json, unguarded
    meta = json.loads(base.read_bytes(prefix + ".json"))
    moved = {}
    try:
        for path in clash:
            prev = path[:-len(".tfrecord")] + ".prev.tfrecord"
            if os.path.lexists(prev):
                os.remove(prev)
            os.link(path, prev)
            moved[os.path.basename(path)] = os.path.basename(prev)
    except OSError:  # no hard links here (some FUSE / FAT): keep the plain order
        for prev in moved.values():
            os.remove(os.path.join(os.path.dirname(prefix), prev))
        return old
    for shard in meta["shards"]:
        shard["file"] = moved.get(shard["file"], shard["file"])
    with atomic_file(prefix + ".json", "w") as f:
        json.dump(meta, f)
    return [os.path.join(os.path.dirname(prefix), shard["file"]) for shard in meta["shards"]]


def write_tfrecords(dataset, prefix, num_shards, progress=True, flag=None):
    """Writes `dataset` as `<prefix>-SSSSS-of-NNNNN.tfrecord` shards plus `<prefix>.json`.

    Shard s holds a contiguous run of examples, so shards in order give the dataset order. Every
    shard and the metadata are staged first (psp_tf.outputs.StagedOutput); an existing set at
    `prefix` is replaced only once the new one is complete, so a run that fails leaves the old set
    as it was; while the new shards move in, the old .json points at hard links of the old shards
    they replace, so a run killed at any moment leaves a readable set, old or new.
    Returns the metadata dict. Raises UserError on bad data or an unwritable output (naming `flag`,
    the command-line flag that gave `prefix`, when there is one).
    """
    if num_shards < 1 or num_shards > len(dataset):
        raise UserError(f"--num_shards={num_shards} must be between 1 and the {len(dataset)} images")
    name = flag or "prefix"
    if str(prefix).endswith("/") or os.path.basename(str(prefix)) in ("", ".", "..") or (
            "://" not in str(prefix) and os.path.isdir(prefix)):
        # The shards are named <prefix>-SSSSS-of-NNNNN.tfrecord: a directory as the prefix would put
        # them beside it, under its name, not in it.
        raise UserError(f"{name} {prefix} names a directory, but it is the shards' name prefix: give "
                        f"DIR/NAME (writes DIR/NAME-00000-of-{num_shards:05d}.tfrecord and DIR/NAME.json)")
    if "://" not in prefix:
        prefix = absolute(prefix)
        sweep(os.path.dirname(prefix))  # staging files a killed run left, whatever its shard count
    if tf.io.gfile.exists(prefix + ".json"):
        try:  # replacing a set is the tool's job; replacing a file that is not one would destroy it
            read_metadata(prefix + ".json")
        except UserError as e:
            raise UserError(f"{flag or 'prefix'} {prefix}: {prefix}.json exists and is not the metadata of a "
                            f"TFRecord set ({e}); move it away or choose another prefix") from None
    bounds = np.linspace(0, len(dataset), num_shards + 1).astype(int)
    bar = Progress(len(dataset), enabled=progress)
    done = [0]

    def tick():
        done[0] += 1
        bar.update(done[0])

    old = _old_shards(prefix)
    staged, shards = [], []
    examples = iter(dataset.examples_in_order())
    try:
        for s in range(num_shards):
            staged.append(StagedOutput(shard_path(prefix, s, num_shards), overwrite=True, flag=flag,
                                       recover=False, follow_symlink=False))
            _write_shard(staged[-1], examples, int(bounds[s + 1] - bounds[s]), tick)
            shards.append({"file": os.path.basename(staged[-1].path), "count": int(bounds[s + 1] - bounds[s])})
        meta = {"dataset": dataset.name, "split": dataset.split, "num_examples": len(dataset),
                "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
                "palette": [list(c) for c in dataset.palette], "has_labels": dataset.has_labels,
                "names": dataset.names, "shards": shards}
        staged.append(StagedOutput(prefix + ".json", overwrite=True, flag=flag, recover=False))
        with tf.io.gfile.GFile(staged[-1].tmp, "w") as f:
            json.dump(meta, f)
    except BaseException:
        bar.close()
        for output in staged:
            output.discard()
        raise
    # The metadata goes last: until it is in, readers see the old set's.
    old = _keep_old_set_readable(prefix, old, {output.path for output in staged})
    for k, output in enumerate(staged):
        try:
            output.commit()
        except OSError as e:
            for rest in staged[k:]:
                rest.discard()
            raise UserError(f"cannot write {output.path}: {e.strerror}") from None
    new = {output.path for output in staged}
    for path in old:
        if path not in new and tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    return meta


def parse_record(serialized, has_labels):
    """Graph-safe: (image uint8 [H, W, 3], label uint8 [H, W] or [0, 0], name tf.string)."""
    example = tf.io.parse_single_example(serialized, FEATURES)
    image = decode.decode_image(example["image"], tf.strings.join(["TFRecord example ", example["name"]]))
    if not has_labels:
        return image, tf.zeros([0, 0], tf.uint8), example["name"]
    # The shared label decoder: a record's label must be the 8-bit grey PNG the writer stores.
    label = decode.decode_label(example["label"], tf.range(256, dtype=tf.int32), decode.GREY,
                                tf.strings.join(["TFRecord example ", example["name"]]))
    return image, tf.cast(label, tf.uint8), example["name"]


# The keys of <prefix>.json this reader needs, and the type each must have.
_METADATA_TYPES = {"dataset": str, "split": str, "num_examples": int, "num_classes": int,
                   "class_names": list, "palette": list, "has_labels": bool, "names": list, "shards": list}


def read_metadata(path):
    """The parsed `<prefix>.json` of a TFRecord set, checked for every key the reader uses.

    Raises:
      UserError: one line naming the file: missing, not JSON, a key missing or of the wrong type, or
        shard counts that do not add up to the names listed.
    """
    if not tf.io.gfile.exists(path):
        raise UserError(f"{path}: TFRecord metadata not found (written by psp-write-tfrecords)")
    try:
        meta = json.loads(base.read_bytes(path))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: not valid JSON ({e}); rewrite it with psp-write-tfrecords") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not TFRecord metadata (a JSON object written by psp-write-tfrecords)")
    for key, kind in _METADATA_TYPES.items():
        if not isinstance(meta.get(key), kind) or (kind is int and isinstance(meta[key], bool)):
            raise UserError(f"{path}: '{key}' is missing or not a {kind.__name__}; rewrite it with psp-write-tfrecords")
    for k, shard in enumerate(meta["shards"]):
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str)
                and isinstance(shard.get("count"), int) and shard["count"] >= 0):
            raise UserError(f"{path}: shards[{k}] is not {{'file': name beside it, 'count': N >= 0}}")
        # Shards lie beside the .json: '../x' or '/x' would read outside the set's directory.
        safe_name(shard["file"], f"{path} shard")
    total = sum(shard["count"] for shard in meta["shards"])
    if not meta["shards"] or total != meta["num_examples"] or len(meta["names"]) != total:
        raise UserError(f"{path}: its shards hold {total} records, but it lists {meta['num_examples']} "
                        f"examples and {len(meta['names'])} names")
    return meta


class TFRecordDataset(base.Dataset):
    """Shards written by `write_tfrecords`; examples are (`shard#k`, same or None)."""

    def __init__(self, data_dir, split):
        prefix = os.path.join(data_dir, split)
        self.metadata_path = prefix + ".json"
        meta = read_metadata(self.metadata_path)
        self.files = [os.path.join(data_dir, s["file"]) for s in meta["shards"]]
        self.counts = [s["count"] for s in meta["shards"]]
        for path, count in zip(self.files, self.counts):
            if not tf.io.gfile.exists(path):
                raise UserError(f"{path}: TFRecord shard listed in {prefix}.json not found")
            check_shard_framing(path, count, self.metadata_path)
        examples = [(f"{f}#{k}", f"{f}#{k}" if meta["has_labels"] else None)
                    for f, n in zip(self.files, self.counts) for k in range(n)]
        super().__init__(meta["dataset"], meta["split"], examples, meta["num_classes"],
                         meta["class_names"], meta["palette"], where=prefix)
        self._names = meta["names"]
        self._cursors = threading.local()  # read(i)'s place in a shard, per thread

    @property
    def names(self):
        return list(self._names)

    def read(self, i):
        shard = int(np.searchsorted(np.cumsum(self.counts), i, side="right"))
        k = i - int(sum(self.counts[:shard]))
        try:
            image, label, _ = parse_record(self._record(shard, k), self.has_labels)
        except tf.errors.OpError as e:
            raise UserError(f"{self.files[shard]}: cannot read record {k} ({op_error_reason(e)})") from None
        except StopIteration:
            raise UserError(f"{self.files[shard]}: cannot read record {k} (the shard ends before it)") from None
        return image.numpy(), (label.numpy() if self.has_labels else None)

    def _record(self, shard, k):
        """Record k of a shard. A shard has no index, so record k is found by reading the k before it:
        the reader is kept after each read and goes on from there when the next k is further on, so
        reading images in order (--show_dir, TensorBoard's images, sharded evaluation's i, i+n, ...)
        reads each record once rather than every earlier one again (quadratic in the shard's size)."""
        # One cursor per thread: the evaluator reads image k+1 ahead in its thread while the --show_dir
        # writer reads image k in the main one, and one shared cursor would send both back each time.
        cursor = getattr(self._cursors, "cursor", None)
        self._cursors.cursor = None  # until this read succeeds: an interrupted skip leaves no stale place
        if cursor is None or cursor[0] != shard or cursor[1] > k:
            cursor = (shard, 0, iter(tf.data.TFRecordDataset(self.files[shard])))
        _, position, records = cursor
        for _ in range(k - position):
            next(records)
        record = next(records)
        self._cursors.cursor = (shard, k + 1, records)
        return record

    def shard_records(self, shard):
        """Yields the serialized records of shard number `shard`, checked against the .json's count.

        Raises:
          UserError: the shard is corrupt, or holds another number of records than listed (truncated).
        """
        path, count = self.files[shard], self.counts[shard]
        k = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                if k == count:
                    break
                yield record
                k += 1
        except tf.errors.OpError as e:
            raise UserError(f"{path}: corrupt or truncated after record {k} of {count} "
                            f"({op_error_reason(e)})") from None
        if k < count:
            raise UserError(f"{path}: truncated: it holds {k} of the {count} records {self.metadata_path} lists")

    def examples_in_order(self, limit=None):
        """Records read in order, shard by shard (no random access): a record that does not decode is
        the UserError of its example; a truncated or corrupt shard is raised (the rest cannot be read)."""
        n = len(self) if limit is None else min(limit, len(self))
        done = 0
        for shard in range(len(self.files)):
            for record in self.shard_records(shard):
                if done == n:
                    return
                done += 1
                try:
                    image, label, _ = parse_record(record, self.has_labels)
                except tf.errors.OpError as e:
                    yield UserError(f"{self.files[shard]}: the record of {self._names[done - 1]} does not "
                                    f"decode ({op_error_reason(e)})")
                    continue
                stored = tf.io.parse_single_example(record, FEATURES)["image"].numpy()
                yield base.Example(self._names[done - 1], image.numpy(),
                                   label.numpy() if self.has_labels else None, stored)

    def tf_examples(self, num_shards=1, shard=0, num_parallel_calls=tf.data.AUTOTUNE):
        records = tf.data.TFRecordDataset(self.files, num_parallel_reads=None)
        if num_shards > 1:
            records = records.shard(num_shards, shard)
        parse = lambda r: parse_record(r, self.has_labels)  # noqa: E731
        return records.map(base.plain(parse), num_parallel_calls=num_parallel_calls, deterministic=True)

    def tf_stream(self, stream_slice, seed, shuffle=True, num_parallel_calls=tf.data.AUTOTUNE,
                  shuffle_buffer=1024):
        """(position, image, label) of the positions `stream_slice` holds, read sequentially.

        TFRecords have no random access, so an epoch is: shards in a stateless order keyed on
        (seed, epoch), interleaved, then a shuffle buffer of `shuffle_buffer` records seeded from the
        seed. Resuming starts at the right epoch and skips raw records within it (no decoding); each
        input pipeline reads the stream and keeps its own positions.
        """
        num_examples = len(self)
        files = tf.constant(self.files)
        first = stream_slice.first_position
        first_epoch = first // num_examples
        cycle = min(4, len(self.files))

        def epoch(e):
            order = tf.range(tf.size(files))
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, positions.epoch_key(seed, e))
            records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
                tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
            if shuffle:
                # shuffle() takes only a Python seed inside a plain (non-autograph) function; the buffer
                # pattern repeats each epoch, but the epoch's shard order above differs, so the order does.
                records = records.shuffle(shuffle_buffer, seed=(seed * 1000003) % 2**31)
            return records.enumerate().map(base.plain(lambda j, r: (e * num_examples + j, r)))

        stream = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(base.plain(epoch))
        stream = stream.skip(first - first_epoch * num_examples)
        if stream_slice.pipelines > 1:
            stream = stream.filter(base.plain(lambda p, r: stream_slice.holds(p)))
        return stream.map(base.plain(lambda p, r: (p, *parse_record(r, True)[:2])),
                          num_parallel_calls=num_parallel_calls, deterministic=True)


def check_shard_framing(path, count, listed_in):
    """Walks a local shard's record headers (no data read): it must hold exactly `count` whole records.

    TensorFlow reads a shard cut at a record boundary as a shorter one without a word, which would
    silently shift every later example against its name; cut inside a record, it fails mid-run with
    a DataLossError that names no file. Each record is [uint64 length][uint32 crc][data][uint32 crc].
    Remote (gs://) shards are not walked: one range request per record would cost minutes.

    Raises:
      UserError: naming the shard, when it is truncated or longer than `listed_in` says.
    """
    if "://" in path:
        return
    size = os.path.getsize(path)
    offset = found = 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                break
            offset += 12 + int.from_bytes(header[:8], "little") + 4
            if offset > size:
                break
            f.seek(offset)
            found += 1
    if offset != size or found != count:
        whole = f"{found} whole records" + (" and a cut one" if offset != size else "")
        raise UserError(f"{path}: truncated or damaged: it holds {whole}, {listed_in} lists {count}")


def op_error_reason(error):
    """The reason in a tf.data OpError, without TF's function-node prefix and op suffix."""
    text = " ".join((error.message or type(error).__name__).split())
    text = decode.TF_NOISE.sub("", text).replace("'", "")
    return text or type(error).__name__


def open_tfrecord(data_dir, split, options=None):
    """Opens `<data_dir>/<split>-*.tfrecord` (+ `<split>.json`) written by write_tfrecords; no options."""
    return TFRecordDataset(data_dir, split)
