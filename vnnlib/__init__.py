"""VNN-LIB parsing into a normalized :class:`~vnnlib.spec.Spec`."""
from vnnlib.errors import VnnlibError
from vnnlib.parser import parse_vnnlib, parse_vnnlib_string
from vnnlib.spec import Clause, InputBox, Property, Spec

__all__ = [
    "Clause",
    "InputBox",
    "Property",
    "Spec",
    "VnnlibError",
    "parse_vnnlib",
    "parse_vnnlib_string",
]
