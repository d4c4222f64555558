"""The command-line drivers: the only place in psp_tf that parses a command line.

Each driver module is one tool (`psp-train`, `psp-evaluate`, ...; `python train.py` and `python
evaluate.py` in a checkout call the same drivers). A driver does three things, through
`psp_tf.cli.driver`: start TensorFlow quietly, turn its flags (derived from the tool's config
dataclass) into a typed, validated config, and call one library function with it.

Import rule: a driver may import anything in psp_tf; nothing in psp_tf imports psp_tf.cli.
"""
