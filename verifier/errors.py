"""Errors of the front door.  Each carries a one-line, user-facing message."""


class NNVerifyError(Exception):
    """Base of every expected failure (bad input, unsupported model...)."""


class ModelError(NNVerifyError):
    """The ONNX model cannot be read or imported (names file and node)."""


class UnsupportedOperatorError(ModelError):
    """An ONNX operator that nnverify cannot handle (names op type, node, supported list)."""


class InputError(NNVerifyError):
    """The model and the property do not fit together (shapes, NaN, empty box...)."""
