"""Discrete-valued operators: ArgMax, OneHot, Equal, Cast.

Values stay floating point inside the graph (indices and booleans as 0/1
floats).  Each op has a concrete ``forward`` and a sound ``interval``; they
have no linear relaxation, so ``backward`` raises (bounds stop at IBP there).
"""
from __future__ import annotations

import torch

from bounds.ops.base import Operator
from bounds.ops.shape_ops import Reshape
from bounds.ops.registry import BuildError, NodeContext, normalize_axis, register


class ArgMax(Operator):
    op_type = "ArgMax"
    is_linear = False

    def __init__(self, axis: int, keepdims: bool, select_last_index: bool = False):
        self.axis = int(axis)
        self.keepdims = bool(keepdims)
        self.select_last_index = bool(select_last_index)

    def forward(self, x):
        dim = self.axis + 1
        if self.select_last_index:
            n = x.shape[dim]
            idx = n - 1 - torch.argmax(x.flip(dim), dim=dim, keepdim=self.keepdims)
        else:
            idx = torch.argmax(x, dim=dim, keepdim=self.keepdims)
        return idx.to(x.dtype)

    def interval(self, bounds):
        """Only entries whose upper bound reaches the largest lower bound can win."""
        lower, upper = bounds
        dim = self.axis + 1
        best_lower = lower.max(dim=dim, keepdim=True).values
        candidate = upper >= best_lower
        index = torch.arange(lower.shape[dim], device=lower.device, dtype=lower.dtype)
        index = index.reshape(-1, *([1] * (lower.dim() - dim - 1)))
        big = float(lower.shape[dim])
        low = torch.where(candidate, index, torch.full_like(lower, big)).min(dim=dim, keepdim=self.keepdims).values
        high = torch.where(candidate, index, torch.full_like(lower, -1.0)).max(dim=dim, keepdim=self.keepdims).values
        return low, high


class OneHot(Operator):
    """``y[..., k, ...] = on if x == k else off`` with the new axis at ``axis``."""

    op_type = "OneHot"
    is_linear = False

    def __init__(self, depth: int, off_value: float, on_value: float, axis: int):
        self.depth = int(depth)
        self.off_value = float(off_value)
        self.on_value = float(on_value)
        self.axis = int(axis)  # per-sample axis of the new dimension in the output

    def _positions(self, x):
        k = torch.arange(self.depth, device=x.device, dtype=x.dtype)
        return k.reshape(-1, *([1] * (x.dim() - self.axis - 1)))

    def _expand(self, x):
        return x.unsqueeze(self.axis + 1)

    def forward(self, x):
        idx = torch.trunc(x)
        idx = torch.where(idx < 0, idx + self.depth, idx)
        hot = self._expand(idx) == self._positions(x)
        return torch.where(hot, self.on_value, self.off_value).to(x.dtype)

    def interval(self, bounds):
        lower, upper = bounds
        k = self._positions(lower)
        lo, hi = self._expand(torch.trunc(lower)), self._expand(torch.trunc(upper))
        wraps = lo < 0  # negative indices wrap around: any position may be hot
        can_hot = wraps | ((k >= lo) & (k <= hi))
        must_hot = (lo == hi) & (k == lo)
        small, large = min(self.off_value, self.on_value), max(self.off_value, self.on_value)
        off = torch.full_like(can_hot, self.off_value, dtype=lower.dtype)
        y_low = torch.where(must_hot, self.on_value, torch.where(can_hot, small, off))
        y_high = torch.where(must_hot, self.on_value, torch.where(can_hot, large, off))
        return y_low, y_high


class Equal(Operator):
    """``y = (x == z)`` as 0/1, with ``z`` a constant or a second variable."""

    op_type = "Equal"
    is_linear = False

    def __init__(self, constant: torch.Tensor | None = None):
        self.constant = constant
        self.num_inputs = 1 if constant is not None else 2

    def forward(self, x, z=None):
        z = self.constant.to(x.device, x.dtype) if z is None else z
        return (x == z).to(x.dtype)

    def interval(self, x_bounds, z_bounds=None):
        xl, xu = x_bounds
        if z_bounds is None:
            zl = zu = self.constant.to(xl.device, xl.dtype)
        else:
            zl, zu = z_bounds
        may_equal = (xl <= zu) & (zl <= xu)
        must_equal = (xl == xu) & (zl == zu) & (xl == zl)
        return must_equal.to(xl.dtype), may_equal.to(xl.dtype)


class Cast(Operator):
    """Cast to an integer type (truncate toward zero) or to bool (``x != 0``)."""

    op_type = "Cast"
    is_linear = False

    def __init__(self, to_bool: bool):
        self.to_bool = bool(to_bool)

    def forward(self, x):
        return (x != 0).to(x.dtype) if self.to_bool else torch.trunc(x)

    def interval(self, bounds):
        lower, upper = bounds
        if not self.to_bool:
            return torch.trunc(lower), torch.trunc(upper)  # trunc is monotone
        nonzero = (lower > 0) | (upper < 0)
        maybe_nonzero = (lower != 0) | (upper != 0)
        return nonzero.to(lower.dtype), maybe_nonzero.to(lower.dtype)


_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_BOOL = 9


@register("ArgMax")
def build_argmax(ctx: NodeContext):
    x = ctx.var(0)
    axis = normalize_axis(ctx.attr("axis", 0), x.rank)
    op = ArgMax(axis, bool(ctx.attr("keepdims", 1)), bool(ctx.attr("select_last_index", 0)))
    return ctx.emit(op, [x], 0)


@register("OneHot")
def build_one_hot(ctx: NodeContext):
    x = ctx.var(0)
    if not (ctx.is_const(1) and ctx.is_const(2)):
        raise BuildError("OneHot with variable depth/values")
    depth = int(ctx.const(1).reshape(-1)[0])
    off_value, on_value = (float(v) for v in ctx.const(2).reshape(-1).tolist())
    axis = normalize_axis(ctx.attr("axis", -1), x.rank + 1)
    return ctx.emit(OneHot(depth, off_value, on_value, axis), [x], 0)


@register("Equal")
def build_equal(ctx: NodeContext):
    if ctx.is_var(0) and ctx.is_var(1):
        from bounds.ops.shape_ops import match_ranks
        return ctx.emit(Equal(), list(match_ranks(ctx, ctx.var(0), ctx.var(1))), 0)
    var_index = 0 if ctx.is_var(0) else 1
    x, constant = ctx.var(var_index), ctx.const(1 - var_index, float_=True)
    if constant.dim() > x.rank:
        x = ctx.emit(Reshape((1,) * (constant.dim() - x.rank) + x.shape), [x])
    return ctx.emit(Equal(constant), [x], 0)


@register("Cast")
def build_cast(ctx: NodeContext):
    x = ctx.var(0)
    to = int(ctx.attr("to"))
    if to in _FLOAT_TYPES:
        return x
    if to == 8:  # STRING
        raise BuildError("Cast to string")
    return ctx.emit(Cast(to_bool=to == _BOOL), [x], 0)
