"""Structural (data movement) operators: every one is linear and exact.

Reshape (also Flatten/Squeeze/Unsqueeze), Transpose, Concat (variables and
constants), AxisSelect (Slice, Split, Gather with constant indices,
nearest-neighbour Resize built in ``resize.py``, edge/reflect Pad), Pad with
a constant value, and Expand.  Per-sample axis ``k`` is runtime axis ``k+1`` for values and ``k+2``
for backward coefficients ``(B, S, ...)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bounds.ops.base import BackwardContext, Operator, sum_tail
from bounds.ops.broadcast import broadcast_shape, lift_rank, sum_to_shape
from bounds.ops.registry import BuildError, NodeContext, Var, normalize_axis, register


class Reshape(Operator):
    """``y = x.reshape(out_shape)`` on the per-sample part (row-major order)."""

    op_type = "Reshape"
    input_signs = (1,)

    def __init__(self, out_shape):
        self.out_shape = tuple(int(s) for s in out_shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.out_shape)

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        return [A.reshape(A.shape[0], A.shape[1], *ctx.input_shapes[0])], 0.0

    def __repr__(self):
        return f"Reshape({list(self.out_shape)})"


class Transpose(Operator):
    """``y = x.permute(perm)`` on the per-sample axes."""

    op_type = "Transpose"
    input_signs = (1,)

    def __init__(self, perm):
        self.perm = tuple(int(p) for p in perm)
        self.inverse = tuple(sorted(range(len(self.perm)), key=lambda i: self.perm[i]))

    def forward(self, x):
        return x.permute(0, *(p + 1 for p in self.perm))

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        return [A.permute(0, 1, *(p + 2 for p in self.inverse))], 0.0

    def __repr__(self):
        return f"Transpose({list(self.perm)})"


class Concat(Operator):
    """Concatenation along ``axis`` of variable inputs and constant pieces.

    ``parts``: per piece, ``None`` (the next variable input, in order) or a
    constant tensor; ``sizes``: each piece's extent along ``axis``.
    """

    op_type = "Concat"

    def __init__(self, axis: int, parts: list[torch.Tensor | None], sizes: list[int]):
        self.axis = int(axis)
        self.parts = list(parts)
        self.sizes = list(sizes)
        self.num_inputs = sum(p is None for p in self.parts)
        self.input_signs = (1,) * self.num_inputs

    def _join(self, xs):
        ref = xs[0]
        it = iter(xs)
        pieces = [next(it) if part is None
                  else part.to(device=ref.device, dtype=ref.dtype).expand(ref.shape[0], *part.shape)
                  for part in self.parts]
        return torch.cat(pieces, dim=self.axis + 1)

    def forward(self, *xs):
        return self._join(xs)

    def interval(self, *bounds):
        return self._join([b[0] for b in bounds]), self._join([b[1] for b in bounds])

    def backward(self, A, ctx: BackwardContext):
        """Variable pieces get their slice of ``A``; constant pieces add ``sum(A_piece * c)``."""
        chunks = torch.split(A, self.sizes, dim=self.axis + 2)
        bias = 0.0
        for chunk, part in zip(chunks, self.parts):
            if part is not None:
                bias = bias + sum_tail(chunk * part.to(device=A.device, dtype=A.dtype))
        return [c for c, part in zip(chunks, self.parts) if part is None], bias

    def to(self, device=None, dtype=None):
        self.parts = [p if p is None else p.to(device=device, dtype=dtype) for p in self.parts]
        return self

    def __repr__(self):
        return f"Concat(axis={self.axis}, sizes={self.sizes})"


class AxisSelect(Operator):
    """A sequence of per-axis selections (each a ``slice`` or an index vector,
    repeats allowed), then a reshape to ``out_shape``.

    Covers Slice, Split, Gather with constant indices, nearest Resize and
    edge/reflect Pad.  Backward scatters (``index_add``) the coefficients.
    """

    op_type = "AxisSelect"
    input_signs = (1,)

    def __init__(self, in_shape, steps: list[tuple[int, slice | torch.Tensor]], out_shape=None):
        self.in_shape = tuple(in_shape)
        self.steps = []
        self.shapes = [self.in_shape]  # shape before each step, then the final one
        shape = list(self.in_shape)
        for axis, sel in steps:
            if isinstance(sel, slice):
                shape[axis] = len(range(*sel.indices(shape[axis])))
            else:
                sel = sel.to(torch.long).reshape(-1)
                shape[axis] = sel.numel()
            self.steps.append((axis, sel))
            self.shapes.append(tuple(shape))
        self.out_shape = tuple(out_shape) if out_shape is not None else tuple(shape)

    def _select(self, x, lead):
        for axis, sel in self.steps:
            if isinstance(sel, slice):
                x = x[(slice(None),) * (axis + lead) + (sel,)]
            else:
                x = x.index_select(axis + lead, sel.to(x.device))
        return x

    def forward(self, x):
        y = self._select(x, 1)
        return y.reshape(x.shape[0], *self.out_shape)

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        lead = A.shape[:2]
        A = A.reshape(*lead, *self.shapes[-1])
        for (axis, sel), before in zip(reversed(self.steps), reversed(self.shapes[:-1])):
            full = A.new_zeros(*lead, *before)
            if isinstance(sel, slice):
                full[(slice(None),) * (axis + 2) + (sel,)] = A
            else:
                full.index_add_(axis + 2, sel.to(A.device), A)
            A = full
        return [A], 0.0

    def __repr__(self):
        return f"AxisSelect({list(self.in_shape)}->{list(self.out_shape)})"


class Pad(Operator):
    """Constant padding: ``pads`` in ONNX order (all begins, then all ends); may be negative (crop)."""

    op_type = "Pad"
    input_signs = (1,)

    def __init__(self, pads, value: float = 0.0):
        rank = len(pads) // 2
        self.pads = tuple(int(p) for p in pads)
        self.value = float(value)
        torch_pads = []
        for axis in reversed(range(rank)):  # torch lists the last axis first
            torch_pads += [self.pads[axis], self.pads[axis + rank]]
        self.torch_pads = tuple(torch_pads)

    def forward(self, x):
        return F.pad(x, self.torch_pads, value=self.value)

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        """Interior coefficients go to ``x``; padded positions contribute ``value * A``."""
        A_in = F.pad(A, tuple(-p for p in self.torch_pads))
        bias = self.value * (sum_tail(A) - sum_tail(A_in)) if self.value != 0.0 else 0.0
        return [A_in], bias

    def __repr__(self):
        return f"Pad({list(self.pads)}, value={self.value})"


class Expand(Operator):
    """Broadcast ``x`` to ``out_shape`` (numpy rules)."""

    op_type = "Expand"
    input_signs = (1,)

    def __init__(self, in_shape, out_shape):
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    def forward(self, x):
        return lift_rank(x, len(self.out_shape)).expand(x.shape[0], *self.out_shape)

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        return [sum_to_shape(A, self.in_shape)], 0.0


# ---------------------------------------------------------------- builders
def match_ranks(ctx: NodeContext, x: Var, z: Var) -> tuple[Var, Var]:
    """Give two variables of a broadcasting op the same rank (leading unit axes),
    so that runtime broadcasting never aligns a per-sample axis with the batch axis."""
    rank = max(x.rank, z.rank)
    if x.rank < rank:
        x = ctx.emit(Reshape((1,) * (rank - x.rank) + x.shape), [x])
    if z.rank < rank:
        z = ctx.emit(Reshape((1,) * (rank - z.rank) + z.shape), [z])
    return x, z


def resolve_reshape(in_shape, target, allow_zero=False) -> tuple[int, ...]:
    target = list(target)
    for i, t in enumerate(target):
        if t == 0 and not allow_zero:
            target[i] = in_shape[i]
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        target[target.index(-1)] = math.prod(in_shape) // max(known, 1)
    if math.prod(target) != math.prod(in_shape):
        raise BuildError(f"cannot reshape {list(in_shape)} to {target}")
    return tuple(target)


@register("Reshape")
def build_reshape(ctx: NodeContext):
    x = ctx.var(0)
    target = ctx.ints_from_attr_or_input("shape", 1)
    out = resolve_reshape(x.shape, target, bool(ctx.attr("allowzero", 0)))
    return ctx.emit(Reshape(out), [x], 0)


@register("Flatten")
def build_flatten(ctx: NodeContext):
    x = ctx.var(0)
    axis = int(ctx.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    return ctx.emit(Reshape((math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))), [x], 0)


@register("Squeeze")
def build_squeeze(ctx: NodeContext):
    x = ctx.var(0)
    axes = ctx.ints_from_attr_or_input("axes", 1)
    if axes is None:
        axes = [i for i, s in enumerate(x.shape) if s == 1]
    axes = {normalize_axis(a, x.rank) for a in axes}
    return ctx.emit(Reshape([s for i, s in enumerate(x.shape) if i not in axes]), [x], 0)


@register("Unsqueeze")
def build_unsqueeze(ctx: NodeContext):
    x = ctx.var(0)
    axes = ctx.ints_from_attr_or_input("axes", 1)
    rank = x.rank + len(axes)
    axes = sorted(normalize_axis(a, rank) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return ctx.emit(Reshape(shape), [x], 0)


@register("Transpose")
def build_transpose(ctx: NodeContext):
    x = ctx.var(0)
    perm = ctx.attr("perm") or list(reversed(range(x.rank)))
    return ctx.emit(Transpose(perm), [x], 0)


@register("Concat")
def build_concat(ctx: NodeContext):
    rank = next(v.rank if isinstance(v, Var) else v.dim() for v in ctx.inputs if v is not None)
    axis = normalize_axis(ctx.attr("axis"), rank)
    parts, sizes, variables = [], [], []
    for v in ctx.inputs:
        if isinstance(v, Var):
            parts.append(None)
            sizes.append(v.shape[axis])
            variables.append(v)
        elif v is not None and v.numel() > 0:
            parts.append(v.to(torch.float32))
            sizes.append(v.shape[axis])
    return ctx.emit(Concat(axis, parts, sizes), variables, 0)


@register("Slice")
def build_slice(ctx: NodeContext):
    x = ctx.var(0)
    if "starts" in ctx.attrs:  # opset < 10
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = list(ctx.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ctx.const_ints(1), ctx.const_ints(2)
        axes = ctx.const_ints(3) if ctx.has_input(3) else list(range(len(starts)))
        steps = ctx.const_ints(4) if ctx.has_input(4) else [1] * len(starts)
    selections = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize_axis(axis, x.rank)
        dim = x.shape[axis]
        start, end, step = slice(start, end, step).indices(dim)
        if step > 0:
            if (start, end, step) != (0, dim, 1):
                selections.append((axis, slice(start, end, step)))
        else:
            selections.append((axis, torch.arange(start, end, step)))
    return ctx.emit(AxisSelect(x.shape, selections), [x], 0)


@register("Split")
def build_split(ctx: NodeContext):
    x = ctx.var(0)
    axis = normalize_axis(ctx.attr("axis", 0), x.rank)
    sizes = ctx.ints_from_attr_or_input("split", 1)
    dim = x.shape[axis]
    if sizes is None:
        n = ctx.num_outputs
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    outputs, start = [], 0
    for i, size in enumerate(sizes):
        outputs.append(ctx.emit(AxisSelect(x.shape, [(axis, slice(start, start + size))]), [x], i))
        start += size
    return outputs


@register("Gather")
def build_gather(ctx: NodeContext):
    x = ctx.var(0)
    if not ctx.is_const(1):
        raise BuildError("Gather with variable indices")
    axis = normalize_axis(ctx.attr("axis", 0), x.rank)
    indices = ctx.const(1).to(torch.long)
    indices = torch.where(indices < 0, indices + x.shape[axis], indices)
    out_shape = x.shape[:axis] + tuple(indices.shape) + x.shape[axis + 1:]
    return ctx.emit(AxisSelect(x.shape, [(axis, indices.reshape(-1))], out_shape), [x], 0)


@register("Pad")
def build_pad(ctx: NodeContext):
    x = ctx.var(0)
    mode = ctx.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = ctx.ints_from_attr_or_input("pads", 1)
    if "value" in ctx.attrs:
        value = float(ctx.attr("value"))
    else:
        value = float(ctx.const(2).reshape(-1)[0]) if ctx.has_input(2) else 0.0
    axes = ctx.const_ints(3) if ctx.has_input(3) else list(range(x.rank))
    full = [0] * (2 * x.rank)
    n = len(axes)
    for k, axis in enumerate(axes):
        axis = normalize_axis(axis, x.rank)
        full[axis], full[axis + x.rank] = pads[k], pads[k + n]
    if mode == "constant":
        return ctx.emit(Pad(full, value), [x], 0)
    if mode not in ("edge", "reflect"):
        raise BuildError(f"Pad mode {mode!r}")
    steps = []
    for axis, dim in enumerate(x.shape):
        begin, end = full[axis], full[axis + x.rank]
        if begin == 0 and end == 0:
            continue
        pos = torch.arange(-begin, dim + end)
        if mode == "edge":
            idx = pos.clamp(0, dim - 1)
        else:  # reflect without repeating the edge
            period = max(2 * (dim - 1), 1)
            idx = pos.remainder(period)
            idx = torch.where(idx >= dim, period - idx, idx)
        steps.append((axis, idx))
    return ctx.emit(AxisSelect(x.shape, steps), [x], 0)


@register("Expand")
def build_expand(ctx: NodeContext):
    x = ctx.var(0)
    target = tuple(ctx.const_ints(1))
    out_shape = broadcast_shape(x.shape, target)
    if out_shape == x.shape:
        return x
    return ctx.emit(Expand(x.shape, out_shape), [x], 0)


@register("Identity", "Dropout")
def build_identity(ctx: NodeContext):
    x = ctx.var(0)
    if ctx.num_outputs > 1:  # Dropout's mask output (inference: all true)
        return [x, torch.ones(x.shape, dtype=torch.bool)]
    return x


@register("Shape")
def build_shape(ctx: NodeContext):
    shape = torch.tensor(ctx.var(0).shape, dtype=torch.long)
    start = int(ctx.attr("start", 0))
    end = ctx.attr("end")
    return shape[start:end if end is not None else None]
