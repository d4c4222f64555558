"""Caffe -> TensorFlow converter for the author's PSPNet caffemodels; no Caffe install needed.

Modules: caffe_pb (minimal caffe.proto schema), reader (caffemodel/prototxt -> layer list),
netspec (layer records), synthetic (test caffemodels), numpy_caffe (NumPy reference of Caffe's
layers), detect (preset from the file), loader (strict by-name loading), verify (parity), cli.
"""

__version__ = "1.0.0"
