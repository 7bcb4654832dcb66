"""ReduceSum / ReduceMean over constant axes: ``y = c * sum_{axes} x`` (``c = 1`` or ``1/n``)."""
from __future__ import annotations

import math

from bounds.ops.base import BackwardContext, Operator
from bounds.ops.registry import NodeContext, normalize_axis, register


class Reduce(Operator):
    op_type = "ReduceSum"
    input_signs = (1,)

    def __init__(self, axes, keepdims: bool, in_shape, mean: bool = False):
        self.axes = tuple(sorted(axes))
        self.keepdims = bool(keepdims)
        self.in_shape = tuple(in_shape)
        self.mean = bool(mean)
        self.factor = 1.0 / math.prod(self.in_shape[a] for a in self.axes) if mean else 1.0
        self.op_type = "ReduceMean" if mean else "ReduceSum"

    def forward(self, x):
        if not self.axes:
            return x
        y = x.sum(dim=tuple(a + 1 for a in self.axes), keepdim=self.keepdims)
        return y * self.factor if self.mean else y

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        """Every summed input gets the coefficient of its output (times ``1/n`` for the mean)."""
        if not self.axes:
            return [A], 0.0
        if not self.keepdims:
            for a in self.axes:
                A = A.unsqueeze(a + 2)
        A = A.expand(*A.shape[:2], *self.in_shape)
        return [A * self.factor if self.mean else A], 0.0

    def __repr__(self):
        return f"{self.op_type}(axes={list(self.axes)}, keepdims={self.keepdims})"


def reduce_axes(ctx: NodeContext, rank: int) -> list[int] | None:
    """Sorted axes of an ONNX Reduce* node (attribute or input; none given:
    all axes), or None for a no-op (``noop_with_empty_axes``)."""
    axes = ctx.ints_from_attr_or_input("axes", 1)
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return None
        axes = list(range(rank))
    return sorted({normalize_axis(a, rank) for a in axes})


@register("ReduceSum", "ReduceMean")
def build_reduce(ctx: NodeContext):
    x = ctx.var(0)
    axes = reduce_axes(ctx, x.rank)
    if axes is None:
        return x
    op = Reduce(axes, bool(ctx.attr("keepdims", 1)), x.shape, mean=ctx.op_type == "ReduceMean")
    return ctx.emit(op, [x], 0)
