"""Reads a binary .caffemodel (or a text prototxt) into an ordered list of `CaffeLayer` records.

Uses the minimal schema of `convert.caffe_pb` with python protobuf (upb), which has no 64 MiB
message cap (Caffe itself lifts protobuf's cap with SetTotalBytesLimit, src/caffe/util/io.cpp).
Every way a file can be wrong ends in a `psp_tf.errors.UserError` naming the file, including a
blob holding NaN or inf: no later step (conversion, --verify, fine-tuning) can make such weights good.
"""

import os
import stat

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from psp_tf.convert import caffe_pb
from psp_tf.convert.netspec import BlobError, CaffeNet, declared_input, layer_from_proto
from psp_tf.errors import UserError

# A binary NetParameter has a non-text byte (a layer tag 0xa2 0x06, a length, packed floats) within
# its first bytes; a file whose head is all printable text is a prototxt or some other text file.
_TEXT_PROBE_BYTES = 65536
_TEXT_BYTES = set(range(32, 127)) | {9, 10, 13}


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(b in _TEXT_BYTES for b in head)


def _read_bytes(path, what):
    if not os.path.exists(path):
        raise UserError(f"{what} {path} does not exist")
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block the read or never end
        raise UserError(f"{what} {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None


def _v1_error(path, net):
    names = ", ".join(layer.name for layer in list(net.layers)[:3])
    return UserError(
        f"{path} is a V1-format caffemodel (layers in the legacy `layers` field, e.g. {names}): that is the "
        "pre-2015 Caffe format, which has no BN or Interp layers; upgrade it with Caffe's "
        "tools/upgrade_net_proto_binary and convert the upgraded file")


def parse_net_bytes(data: bytes, path: str):
    """Parses caffemodel bytes into a NetParameter message, checking that it is a V2 layer list.

    Raises:
      UserError: empty, text, unparsable (truncated or random bytes), V1-format, or without layers.
    """
    if not data:
        raise UserError(f"{path} is empty (0 bytes); expected a binary .caffemodel")
    if _looks_like_text(data[:_TEXT_PROBE_BYTES]):
        hint = " (pass a prototxt with --prototxt)" if b"layer" in data[:_TEXT_PROBE_BYTES] else ""
        raise UserError(f"{path} is a text file, not a binary .caffemodel{hint}")
    net = caffe_pb.NetParameter()
    try:
        net.ParseFromString(data)
    except pb_message.DecodeError as e:
        raise UserError(f"{path} is not a valid binary caffemodel ({len(data)} bytes): truncated or corrupt "
                        f"(protobuf: {e})") from None
    if len(net.layers) and not len(net.layer):
        raise _v1_error(path, net)
    if not len(net.layer):
        raise UserError(f"{path} holds no Caffe layers ({len(data)} bytes): not a caffemodel, or corrupt")
    for layer in net.layer:
        if not layer.name or not layer.type:
            raise UserError(f"{path} is not a valid caffemodel: a layer without a name or type (corrupt file?)")
    return net


def read_caffemodel(path: str) -> CaffeNet:
    """Reads a binary .caffemodel.

    Args:
      path: the file.

    Returns:
      CaffeNet with every layer in file order and its blobs as float32 numpy arrays.

    Raises:
      UserError: missing, empty, text, truncated, random, V1-format file or a corrupt blob.
    """
    data = _read_bytes(path, "caffemodel")
    net = parse_net_bytes(data, path)
    del data  # the parsed message holds its own copy; keep peak memory near 2x the file size
    try:
        layers = [layer_from_proto(layer) for layer in net.layer]
    except BlobError as e:
        raise UserError(f"{path}: {e} (truncated or corrupt file)") from None
    check_finite_blobs(layers, path)
    input_name, input_shape = declared_input(net)
    return CaffeNet(name=net.name, layers=layers, input_name=input_name, input_shape=input_shape)


def check_finite_blobs(layers, source):
    """Refuses weights holding NaN or inf (checked after the float32 cast: a huge double overflows).

    Args:
      layers: CaffeLayer records with their blobs.
      source: what to name in the message (the file, or "the layer list").

    Raises:
      UserError: names the first layer and blob with non-finite values, how many, and the first one.
    """
    for layer in layers:
        for i, blob in enumerate(layer.blobs):
            finite = np.isfinite(blob)
            if not finite.all():
                bad = np.flatnonzero(~finite.ravel())
                raise UserError(
                    f"{source}: layer {layer.name!r} blob {i} holds {bad.size} non-finite value(s) "
                    f"(first: {blob.ravel()[bad[0]]} at flat index {bad[0]} of shape {list(blob.shape)}); "
                    "the weights are corrupt or come from a diverged training run")


def read_prototxt(path: str) -> CaffeNet:
    """Reads a text prototxt (the network definition; no weights).

    Raises:
      UserError: missing, binary or malformed file, or one without layers.
    """
    data = _read_bytes(path, "prototxt")
    try:
        net = caffe_pb.parse_prototxt(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text prototxt (binary data; is it the .caffemodel?)") from None
    except text_format.ParseError as e:
        raise UserError(f"{path} is not a valid prototxt: {e}") from None
    if len(net.layers) and not len(net.layer):
        raise _v1_error(path, net)
    if not len(net.layer):
        raise UserError(f"{path} defines no layers; expected a Caffe deploy prototxt")
    input_name, input_shape = declared_input(net)
    layers = [layer_from_proto(layer, with_blobs=False) for layer in net.layer]
    return CaffeNet(name=net.name, layers=layers, input_name=input_name, input_shape=input_shape)
