"""VNN-LIB parsing into a normalized :class:`~vnnlib.spec.Spec`."""
from vnnlib.errors import VnnlibError
from vnnlib.parser import parse_vnnlib, parse_vnnlib_string
from vnnlib.spec import Clause, InputBox, Property, Spec
from vnnlib.writer import format_vnnlib

__all__ = [
    "Clause",
    "InputBox",
    "Property",
    "Spec",
    "VnnlibError",
    "format_vnnlib",
    "parse_vnnlib",
    "parse_vnnlib_string",
]
