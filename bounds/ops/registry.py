"""Registry from ONNX op type to a small builder function.

A builder lives next to the operator class it instantiates::

    @register("Gemm")
    def build_gemm(ctx: NodeContext):
        ...
        return ctx.emit(Linear(weight, bias), [x])

It receives a :class:`NodeContext` (attributes, inputs that are either
constant tensors or :class:`Var` references to variable tensors) and returns
one value per ONNX output (a single value or a list): a :class:`Var` (the
result of ``ctx.emit`` or an input passed through unchanged) or a constant
``torch.Tensor`` (constant folding).  Builders never see ONNX protobufs, so
this module has no dependency on ``onnx``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from bounds.ops.base import Operator


@dataclass(frozen=True)
class Var:
    """A variable tensor of the graph being built.

    ``shape`` is the per-sample shape (ONNX static shape, dynamic dims = 1),
    so ``len(shape)`` is the ONNX rank.
    """

    name: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)


Value = Var | torch.Tensor | None


class BuildError(Exception):
    """A node that the builder cannot express (the importer adds file/node names)."""


@dataclass
class NodeContext:
    """Everything a builder may use about one ONNX node.

    ``inputs``: per ONNX input, a constant tensor, a :class:`Var`, or ``None``
    for an omitted optional input.  ``emit(op, vars, output_index)`` appends a
    graph node and returns its :class:`Var`; the importer supplies it.
    """

    op_type: str
    name: str
    attrs: dict[str, Any]
    inputs: list[Value]
    num_outputs: int
    opset: int
    emit_fn: Callable[..., Var]
    inferred_shapes: list[tuple[int, ...] | None] = field(default_factory=list)

    # ----------------------------------------------------------- inputs
    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def is_const(self, i: int) -> bool:
        return self.has_input(i) and isinstance(self.inputs[i], torch.Tensor)

    def is_var(self, i: int) -> bool:
        return self.has_input(i) and isinstance(self.inputs[i], Var)

    def const(self, i: int, *, float_: bool = False) -> torch.Tensor:
        value = self.inputs[i] if i < len(self.inputs) else None
        if not isinstance(value, torch.Tensor):
            raise BuildError(f"{self.op_type}: input {i} must be a constant")
        if float_ and not value.is_floating_point():
            value = value.to(torch.float32)
        return value

    def const_ints(self, i: int) -> list[int]:
        return [int(v) for v in self.const(i).reshape(-1).tolist()]

    def var(self, i: int) -> Var:
        value = self.inputs[i]
        if not isinstance(value, Var):
            raise BuildError(f"{self.op_type}: input {i} must be a variable tensor")
        return value

    def ints_from_attr_or_input(self, attr: str, index: int) -> list[int] | None:
        """Axes/pads/... given as an attribute (old opsets) or a constant input (new)."""
        if attr in self.attrs:
            return [int(v) for v in self.attrs[attr]]
        if self.has_input(index):
            return self.const_ints(index)
        return None

    # ------------------------------------------------------------ output
    def emit(self, op: Operator, inputs: Sequence[Var], output_index: int | None = None) -> Var:
        return self.emit_fn(op, list(inputs), output_index)

    def inferred_shape(self, output_index: int = 0) -> tuple[int, ...] | None:
        if output_index < len(self.inferred_shapes):
            return self.inferred_shapes[output_index]
        return None


Builder = Callable[[NodeContext], Any]
_BUILDERS: dict[str, Builder] = {}


def register(*op_types: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("Add", "Sub")`` on a builder function."""

    def wrap(fn: Builder) -> Builder:
        for op_type in op_types:
            _BUILDERS[op_type] = fn
        return fn

    return wrap


def get_builder(op_type: str) -> Builder | None:
    _ensure_loaded()
    return _BUILDERS.get(op_type)


def supported_ops() -> list[str]:
    """Every ONNX op type the importer can handle (variable or constant inputs)."""
    _ensure_loaded()
    return sorted(_BUILDERS)


def normalize_axis(axis: int, rank: int) -> int:
    """ONNX axis (possibly negative) -> per-sample axis index in ``[0, rank)``."""
    axis = int(axis)
    if axis < 0:
        axis += rank
    if not 0 <= axis < max(rank, 1):
        raise BuildError(f"axis {axis} out of range for rank {rank}")
    return axis


def _ensure_loaded() -> None:
    # Importing the package registers every builder (decorators run at import).
    import bounds.ops  # noqa: F401
