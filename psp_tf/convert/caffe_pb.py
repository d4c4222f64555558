"""A minimal caffe.proto, built at import time: only the messages and fields the converter reads.

Field numbers and defaults are those of `src/caffe/proto/caffe.proto` in the author's Caffe fork
(docs/caffe_reference.md §2.5). The schema is declared with `descriptor_pb2` and turned into
message classes with `message_factory`, so no protoc run and no generated code is needed. Fields we
do not declare (solver state, data-layer parameters, ...) are kept by protobuf as unknown fields and
ignored; a real caffemodel therefore parses unchanged.

Exports the message classes `NetParameter`, `LayerParameter`, `V1LayerParameter`, `BlobProto`,
`BlobShape` and the per-layer `*Parameter` messages, plus `parse_prototxt(text)`.
"""

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_TYPES = {
    "string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "int64": _F.TYPE_INT64,
}

# (message, [(field name, number, type, label, default or None, packed)]). A type that is not in
# _TYPES is a message or enum name of this file. Enums are nested in their message as in caffe.proto,
# because proto2 enum values share their parent's scope (PoolMethod.MAX and EltwiseOp.MAX would clash).
_ENUMS = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "EltwiseParameter.EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
}
_MESSAGES = [
    ("BlobShape", [("dim", 1, "int64", _REP, None, True)]),
    ("BlobProto", [
        # Legacy 4-D layout (num, channels, height, width); used when any of them is set.
        ("num", 1, "int32", _OPT, None, False),
        ("channels", 2, "int32", _OPT, None, False),
        ("height", 3, "int32", _OPT, None, False),
        ("width", 4, "int32", _OPT, None, False),
        ("data", 5, "float", _REP, None, True),
        ("shape", 7, "BlobShape", _OPT, None, False),
        ("double_data", 8, "double", _REP, None, True),
    ]),
    ("FillerParameter", [
        ("type", 1, "string", _OPT, "constant", False),
        ("value", 2, "float", _OPT, None, False),
        ("std", 6, "float", _OPT, "1", False),
    ]),
    ("ParamSpec", [
        ("name", 1, "string", _OPT, None, False),
        ("lr_mult", 3, "float", _OPT, "1", False),
        ("decay_mult", 4, "float", _OPT, "1", False),
    ]),
    ("ConvolutionParameter", [
        ("num_output", 1, "uint32", _OPT, None, False),
        ("bias_term", 2, "bool", _OPT, "true", False),
        ("pad", 3, "uint32", _REP, None, False),
        ("kernel_size", 4, "uint32", _REP, None, False),
        ("group", 5, "uint32", _OPT, "1", False),
        ("stride", 6, "uint32", _REP, None, False),
        ("weight_filler", 7, "FillerParameter", _OPT, None, False),
        ("bias_filler", 8, "FillerParameter", _OPT, None, False),
        ("pad_h", 9, "uint32", _OPT, "0", False),
        ("pad_w", 10, "uint32", _OPT, "0", False),
        ("kernel_h", 11, "uint32", _OPT, None, False),
        ("kernel_w", 12, "uint32", _OPT, None, False),
        ("stride_h", 13, "uint32", _OPT, None, False),
        ("stride_w", 14, "uint32", _OPT, None, False),
        ("dilation", 18, "uint32", _REP, None, False),
    ]),
    ("PoolingParameter", [
        ("pool", 1, "PoolingParameter.PoolMethod", _OPT, "MAX", False),
        ("kernel_size", 2, "uint32", _OPT, None, False),
        ("stride", 3, "uint32", _OPT, "1", False),
        ("pad", 4, "uint32", _OPT, "0", False),
        ("kernel_h", 5, "uint32", _OPT, None, False),
        ("kernel_w", 6, "uint32", _OPT, None, False),
        ("stride_h", 7, "uint32", _OPT, None, False),
        ("stride_w", 8, "uint32", _OPT, None, False),
        ("pad_h", 9, "uint32", _OPT, "0", False),
        ("pad_w", 10, "uint32", _OPT, "0", False),
        ("global_pooling", 12, "bool", _OPT, "false", False),
    ]),
    ("DropoutParameter", [("dropout_ratio", 1, "float", _OPT, "0.5", False)]),
    ("EltwiseParameter", [
        ("operation", 1, "EltwiseParameter.EltwiseOp", _OPT, "SUM", False),
        ("coeff", 2, "float", _REP, None, False),
    ]),
    ("ConcatParameter", [
        ("concat_dim", 1, "uint32", _OPT, "1", False),
        ("axis", 2, "int32", _OPT, "1", False),
    ]),
    ("ReLUParameter", [("negative_slope", 1, "float", _OPT, "0", False)]),
    ("BNParameter", [
        ("slope_filler", 1, "FillerParameter", _OPT, None, False),
        ("bias_filler", 2, "FillerParameter", _OPT, None, False),
        ("momentum", 3, "float", _OPT, "0.9", False),
        ("eps", 4, "float", _OPT, "1e-05", False),
        ("frozen", 5, "bool", _OPT, "false", False),
    ]),
    ("InterpParameter", [
        ("height", 1, "int32", _OPT, "0", False),
        ("width", 2, "int32", _OPT, "0", False),
        ("zoom_factor", 3, "int32", _OPT, "1", False),
        ("shrink_factor", 4, "int32", _OPT, "1", False),
        ("pad_beg", 5, "int32", _OPT, "0", False),
        ("pad_end", 6, "int32", _OPT, "0", False),
    ]),
    ("LayerParameter", [
        ("name", 1, "string", _OPT, None, False),
        ("type", 2, "string", _OPT, None, False),
        ("bottom", 3, "string", _REP, None, False),
        ("top", 4, "string", _REP, None, False),
        ("loss_weight", 5, "float", _REP, None, False),
        ("param", 6, "ParamSpec", _REP, None, False),
        ("blobs", 7, "BlobProto", _REP, None, False),
        ("phase", 10, "Phase", _OPT, None, False),
        ("concat_param", 104, "ConcatParameter", _OPT, None, False),
        ("convolution_param", 106, "ConvolutionParameter", _OPT, None, False),
        ("dropout_param", 108, "DropoutParameter", _OPT, None, False),
        ("eltwise_param", 110, "EltwiseParameter", _OPT, None, False),
        ("pooling_param", 121, "PoolingParameter", _OPT, None, False),
        ("relu_param", 123, "ReLUParameter", _OPT, None, False),
        ("interp_param", 143, "InterpParameter", _OPT, None, False),
        ("bn_param", 152, "BNParameter", _OPT, None, False),
    ]),
    # A write-side view of BlobProto: a packed repeated float/double field is one length-delimited
    # field on the wire, the same encoding as `bytes`, so a numpy buffer serialises here in one copy
    # and parses back as BlobProto.data/double_data (python protobuf's per-value extend is ~4 s per
    # 20M floats).
    ("PackedBlobData", [
        ("data", 5, "bytes", _OPT, None, False),
        ("double_data", 8, "bytes", _OPT, None, False),
    ]),
    # The pre-2015 layer message: enough to recognise a V1 file and name its layers.
    ("V1LayerParameter", [
        ("bottom", 2, "string", _REP, None, False),
        ("top", 3, "string", _REP, None, False),
        ("name", 4, "string", _OPT, None, False),
        ("type", 5, "int32", _OPT, None, False),  # V1 LayerType enum; read as its number
        ("blobs", 6, "BlobProto", _REP, None, False),
    ]),
    ("NetParameter", [
        ("name", 1, "string", _OPT, None, False),
        ("layers", 2, "V1LayerParameter", _REP, None, False),
        ("input", 3, "string", _REP, None, False),
        ("input_dim", 4, "int32", _REP, None, False),
        ("input_shape", 8, "BlobShape", _REP, None, False),
        ("layer", 100, "LayerParameter", _REP, None, False),
    ]),
]


def _build_file():
    fdp = descriptor_pb2.FileDescriptorProto(name="psp_tf_caffe_min.proto", package="caffe", syntax="proto2")
    messages = {}
    for name, fields in _MESSAGES:
        message = messages[name] = fdp.message_type.add(name=name)
        for field_name, number, type_, label, default, packed in fields:
            field = message.field.add(name=field_name, number=number, label=label)
            if type_ in _TYPES:
                field.type = _TYPES[type_]
            else:
                field.type = _F.TYPE_ENUM if type_ in _ENUMS else _F.TYPE_MESSAGE
                field.type_name = f".caffe.{type_}"
            if default is not None:
                field.default_value = default
            if packed:
                field.options.packed = True
    for name, values in _ENUMS.items():
        parent, _, enum_name = name.rpartition(".")
        enum = (messages[parent].enum_type if parent else fdp.enum_type).add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name, _ in _MESSAGES}


_CLASSES = _build_file()
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
V1LayerParameter = _CLASSES["V1LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobShape = _CLASSES["BlobShape"]
ConvolutionParameter = _CLASSES["ConvolutionParameter"]
PoolingParameter = _CLASSES["PoolingParameter"]
InterpParameter = _CLASSES["InterpParameter"]
BNParameter = _CLASSES["BNParameter"]
PackedBlobData = _CLASSES["PackedBlobData"]

# V1LayerParameter.LayerType numbers of the common layers, for error messages about V1 files.
V1_TYPE_NAMES = {4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN", 17: "Pooling",
                 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 25: "Eltwise", 3: "Concat", 1: "Accuracy"}


def set_blob_values(blob, values, double=False):
    """Sets BlobProto `blob`'s data (or double_data) to the flattened `values` in one buffer copy."""
    values = np.ascontiguousarray(values, dtype="<f8" if double else "<f4").ravel()
    packed = PackedBlobData(double_data=values.tobytes()) if double else PackedBlobData(data=values.tobytes())
    blob.ClearField("double_data" if double else "data")
    blob.MergeFromString(packed.SerializeToString())


def parse_prototxt(text):
    """Parses a Caffe prototxt (text format) into a NetParameter.

    Fields this schema does not declare (fillers' other options, data-layer settings, ...) are skipped,
    because only the layer list and the geometry are needed.

    Raises:
      google.protobuf.text_format.ParseError: the text is not a valid prototxt.
    """
    net = NetParameter()
    text_format.Parse(text, net, allow_unknown_field=True)
    return net
