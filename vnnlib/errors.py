"""Errors raised while reading a VNN-LIB property."""


class VnnlibError(ValueError):
    """A malformed or unsupported property; the message is one line that names
    ``file:line:col`` and what was expected."""
