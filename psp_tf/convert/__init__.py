"""Caffe -> TensorFlow converter for the author's PSPNet caffemodels; no Caffe install needed.

Modules: caffe_pb (minimal caffe.proto schema), reader (caffemodel/prototxt -> layer list),
netspec (layer records), synthetic (caffemodels with the author's layer list and random weights),
numpy_caffe (NumPy reference of Caffe's layers), detect (preset from the file), loader (strict
by-name loading), verify (parity), config (ConvertConfig), run (convert_file). The command line is
psp_tf/cli/convert.py.
"""

__version__ = "1.0.0"
