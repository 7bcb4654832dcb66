"""ONNX operators expressed exactly as small graphs of existing operators.

Piecewise-linear ops become ReLUs, so ReLU-split BaB, beta-CROWN and the
MIP encoding cover them with no new relaxation:

* ``max(a, b) = b + relu(a - b)``, ``min(a, b) = a - relu(a - b)`` (Max, Min,
  ReduceMax/ReduceMin as a balanced tree of halves);
* ``|x| = 2 relu(x) - x`` (its triangle relaxation is the exact hull of ``|x|``);
* ``PRelu(x) = (1 - s) relu(x) + s x``;

and the rest are compositions whose parts already carry sound relaxations:
HardSigmoid (affine then Clip), Ceil (``-floor(-x)``), Sum/Mean, Where with a
constant condition (``m a + (1 - m) b``), Tile (unsqueeze, expand, reshape),
GlobalAveragePool / GlobalMaxPool, LayerNormalization (the ONNX function
body: mean, centred square, ``1 / sqrt(var + eps)``).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from bounds.ops.add import Add2
from bounds.ops.elementwise_affine import ElementwiseAffine
from bounds.ops.reduce import Reduce, reduce_axes
from bounds.ops.registry import BuildError, NodeContext, Var, normalize_axis, register
from bounds.ops.relu import ReLU
from bounds.ops.shape_ops import AxisSelect, Concat, Expand, Reshape

Value = Var | torch.Tensor


# ------------------------------------------------------------------ helpers
def _as_float(c: torch.Tensor) -> torch.Tensor:
    return c.to(torch.float32) if not c.is_floating_point() else c


def _emit(ctx: NodeContext, op, inputs: Sequence[Var], final: bool) -> Var:
    return ctx.emit(op, list(inputs), 0 if final else None)


def _affine(ctx: NodeContext, x: Var, scale, bias, final: bool = False) -> Var:
    """``x * scale + bias`` (constants broadcast against ``x``)."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    bias = torch.as_tensor(bias, dtype=torch.float32)
    return _emit(ctx, ElementwiseAffine(scale, bias, x.shape), [x], final)


def _relu(ctx: NodeContext, x: Var) -> Var:
    return _emit(ctx, ReLU(), [x], False)


def _check_finite(ctx: NodeContext, c: torch.Tensor) -> torch.Tensor:
    c = _as_float(c)
    if not bool(torch.isfinite(c).all()):
        raise BuildError(f"{ctx.op_type} with a non-finite constant operand")
    return c


def _extreme2(ctx: NodeContext, a: Value, b: Value, take_max: bool, final: bool) -> Var:
    """``max(a, b) = b + relu(a - b)`` or ``min(a, b) = a - relu(a - b)``
    (at least one of ``a``, ``b`` a variable)."""
    if not isinstance(a, Var):
        a, b = b, a                      # max and min are symmetric: the variable first
    if isinstance(b, Var):
        r = _relu(ctx, _emit(ctx, Add2(a.shape, b.shape, 1.0, -1.0), [a, b], False))
        if take_max:
            return _emit(ctx, Add2(b.shape, r.shape, 1.0, 1.0), [b, r], final)
    else:
        c = _check_finite(ctx, b)
        r = _relu(ctx, _affine(ctx, a, 1.0, -c))
        if take_max:
            return _affine(ctx, r, 1.0, c, final)
    return _emit(ctx, Add2(a.shape, r.shape, 1.0, -1.0), [a, r], final)


def _fold_constants(values: Sequence[Value], combine) -> list[Value]:
    """The variables, then all constants combined into one (if any)."""
    variables = [v for v in values if isinstance(v, Var)]
    constants = [_as_float(v) for v in values if isinstance(v, torch.Tensor)]
    if constants:
        variables.append(functools.reduce(combine, constants))
    return variables


# ---------------------------------------------------------- piecewise linear
@register("Max", "Min")
def build_max_min(ctx: NodeContext):
    take_max = ctx.op_type == "Max"
    values = _fold_constants([v for v in ctx.inputs if v is not None],
                             torch.maximum if take_max else torch.minimum)
    if len(values) == 1:
        return values[0]
    acc = values[0]
    for i, v in enumerate(values[1:]):
        acc = _extreme2(ctx, acc, v, take_max, final=i == len(values) - 2)
    return acc


@register("Abs")
def build_abs(ctx: NodeContext):
    x = ctx.var(0)
    r = _relu(ctx, x)
    return _emit(ctx, Add2(r.shape, x.shape, 2.0, -1.0), [r, x], True)


def _leaky(ctx: NodeContext, x: Var, slope: torch.Tensor) -> Var:
    """``(1 - s) relu(x) + s x``: the relaxation family of a leaky ReLU (upper
    chord, lower slope anywhere in ``[s, 1]``), with ReLU-split BaB and MIP."""
    if not bool(slope.ne(0).any()):
        return _emit(ctx, ReLU(), [x], True)
    r = _affine(ctx, _relu(ctx, x), 1.0 - slope, 0.0)
    sx = _affine(ctx, x, slope, 0.0)
    return _emit(ctx, Add2(r.shape, sx.shape, 1.0, 1.0), [r, sx], True)


@register("PRelu", "LeakyRelu")
def build_leaky_relu(ctx: NodeContext):
    """PRelu (constant slope tensor, broadcast to ``x``) and LeakyRelu (``alpha``)."""
    x = ctx.var(0)
    if ctx.op_type == "LeakyRelu":
        slope = torch.tensor(float(ctx.attr("alpha", 0.01)))
    else:
        slope = ctx.const(1, float_=True)
    return _leaky(ctx, x, _check_finite(ctx, slope))


def clip_graph(ctx: NodeContext, x: Var, low: float | None, high: float | None, final: bool = True) -> Var:
    """``clip(x, a, b) = a + relu(x - a) - relu(x - b)`` (two ReLUs reading
    ``x``), ``max(x, a)`` or ``min(x, b)`` with one bound: on a Clip net
    (20-24-24-3) ReLU-split BaB proved in 5.5 s / 2,008 domains what GenBaB
    on the Clip relaxation left open after 20 s / 20k domains."""
    if low is not None and high is not None and low <= high:
        above_low = _relu(ctx, _affine(ctx, x, 1.0, -low))
        above_high = _relu(ctx, _affine(ctx, x, 1.0, -high))
        gap = _emit(ctx, Add2(above_low.shape, above_high.shape, 1.0, -1.0), [above_low, above_high], False)
        return _affine(ctx, gap, 1.0, low, final)
    y = x
    if low is not None:
        y = _extreme2(ctx, y, torch.tensor(float(low)), True, final and high is None)
    if high is not None:
        y = _extreme2(ctx, y, torch.tensor(float(high)), False, final)
    return y


@register("Clip")
def build_clip(ctx: NodeContext):
    if "min" in ctx.attrs or "max" in ctx.attrs:  # opset < 11
        low, high = ctx.attr("min"), ctx.attr("max")
    else:
        low = float(ctx.const(1).reshape(-1)[0]) if ctx.has_input(1) else None
        high = float(ctx.const(2).reshape(-1)[0]) if ctx.has_input(2) else None
    return clip_graph(ctx, ctx.var(0), low, high)


def _halves_extreme(ctx: NodeContext, x: Var, axis: int, take_max: bool, final: bool) -> Var:
    """max/min over ``axis`` (kept, size 1) by a balanced tree of halves."""
    while x.shape[axis] > 1:
        n = x.shape[axis]
        half = n // 2
        first = _emit(ctx, AxisSelect(x.shape, [(axis, slice(0, half))]), [x], False)
        second = _emit(ctx, AxisSelect(x.shape, [(axis, slice(half, 2 * half))]), [x], False)
        m = _extreme2(ctx, first, second, take_max, final and n == 2)
        if n % 2:
            rest = _emit(ctx, AxisSelect(x.shape, [(axis, slice(2 * half, n))]), [x], False)
            m = _emit(ctx, Concat(axis, [None, None], [half, 1]), [m, rest], False)
        x = m
    return x


@register("ReduceMax", "ReduceMin")
def build_reduce_extreme(ctx: NodeContext):
    """Max/min over each reduced axis in turn, by a balanced tree of halves."""
    x, keepdims = ctx.var(0), bool(ctx.attr("keepdims", 1))
    axes = reduce_axes(ctx, x.rank)
    if axes is None:
        return x
    if 0 in axes and x.shape[0] != 1:
        raise BuildError(f"{ctx.op_type} over the batch axis")
    for k, axis in enumerate(axes):
        x = _halves_extreme(ctx, x, axis, ctx.op_type == "ReduceMax", final=keepdims and k == len(axes) - 1)
    if not keepdims:
        x = _emit(ctx, Reshape([s for i, s in enumerate(x.shape) if i not in axes]), [x], True)
    return x


# ---------------------------------------------------------------- compositions
@register("HardSigmoid")
def build_hard_sigmoid(ctx: NodeContext):
    """``clip(alpha x + beta, 0, 1)``."""
    y = _affine(ctx, ctx.var(0), float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5)))
    return clip_graph(ctx, y, 0.0, 1.0)


@register("Ceil")
def build_ceil(ctx: NodeContext):
    """``ceil(x) = -floor(-x)``."""
    from bounds.ops.activations import Floor
    y = _emit(ctx, Floor(), [_affine(ctx, ctx.var(0), -1.0, 0.0)], False)
    return _affine(ctx, y, -1.0, 0.0, final=True)


@register("Sum", "Mean")
def build_sum_mean(ctx: NodeContext):
    inputs = [v for v in ctx.inputs if v is not None]
    values = _fold_constants(inputs, torch.add)
    scale = 1.0 / len(inputs) if ctx.op_type == "Mean" else 1.0
    acc = values[0]
    for v in values[1:]:
        if isinstance(v, Var):
            acc = _emit(ctx, Add2(acc.shape, v.shape, 1.0, 1.0), [acc, v], False)
        else:
            acc = _affine(ctx, acc, 1.0, v)
    if scale == 1.0 and acc is not inputs[0]:
        return acc
    return _affine(ctx, acc, scale, 0.0, final=True)


@register("Where")
def build_where(ctx: NodeContext):
    """``m a + (1 - m) b`` for a constant condition ``m``; a constant branch
    enters as ``where(m, a, 0)`` / ``where(m, 0, b)`` so that infinite fill
    values (attention masks) never meet a zero factor."""
    if not ctx.is_const(0):
        raise BuildError("Where with a variable condition")
    cond = ctx.const(0).to(torch.bool)
    mask = cond.to(torch.float32)
    a, b = ctx.inputs[1], ctx.inputs[2]
    if isinstance(a, Var) and isinstance(b, Var):
        left = _affine(ctx, a, mask, 0.0)
        right = _affine(ctx, b, 1.0 - mask, 0.0)
        return _emit(ctx, Add2(left.shape, right.shape, 1.0, 1.0), [left, right], True)
    if isinstance(a, Var):
        return _affine(ctx, a, mask, torch.where(cond, 0.0, _as_float(b)), final=True)
    return _affine(ctx, b, 1.0 - mask, torch.where(cond, _as_float(a), 0.0), final=True)


@register("Tile")
def build_tile(ctx: NodeContext):
    """Per repeated axis: a new unit axis in front, expanded ``r`` times, merged back."""
    x = ctx.var(0)
    repeats = ctx.const_ints(1)
    if len(repeats) != x.rank:
        raise BuildError(f"Tile with {len(repeats)} repeats for rank {x.rank}")
    if repeats[0] != 1:
        raise BuildError("Tile along the batch axis")
    for axis, r in enumerate(repeats):
        if r == 1:
            continue
        shape = list(x.shape)
        lifted = shape[:axis] + [1] + shape[axis:]
        wide = shape[:axis] + [r] + shape[axis:]
        y = _emit(ctx, Reshape(lifted), [x], False)
        y = _emit(ctx, Expand(tuple(lifted), tuple(wide)), [y], False)
        x = _emit(ctx, Reshape(shape[:axis] + [r * shape[axis]] + shape[axis + 1:]), [y], False)
    return x


@register("GlobalAveragePool", "GlobalMaxPool")
def build_global_pool(ctx: NodeContext):
    x = ctx.var(0)
    if x.rank < 3:
        raise BuildError(f"{ctx.op_type} needs rank >= 3")
    spatial = list(range(2, x.rank))
    if ctx.op_type == "GlobalAveragePool":
        return _emit(ctx, Reduce(spatial, True, x.shape, mean=True), [x], True)
    from bounds.ops.pooling_max import MaxPool
    d = len(spatial)
    return _emit(ctx, MaxPool(list(x.shape[2:]), [1] * d, [0] * (2 * d), [1] * d, False), [x], True)


@register("LayerNormalization", "InstanceNormalization")
def build_normalization(ctx: NodeContext):
    """``(x - mean) / sqrt(var + eps) * scale + bias``: over the axes from
    ``axis`` on (LayerNormalization), over the spatial axes with per-channel
    scale and bias (InstanceNormalization)."""
    from bounds.ops.activations import Pow, Reciprocal, Sqrt
    from bounds.ops.product import Mul2
    if ctx.num_outputs > 1:
        raise BuildError(f"{ctx.op_type} with Mean/InvStdDev outputs")
    x = ctx.var(0)
    if ctx.op_type == "InstanceNormalization":
        if x.rank < 3:
            raise BuildError("InstanceNormalization needs rank >= 3")
        axes = list(range(2, x.rank))
        per_channel = (-1,) + (1,) * (x.rank - 2)
    else:
        axes = list(range(normalize_axis(ctx.attr("axis", -1), x.rank), x.rank))
        per_channel = None
    eps = float(ctx.attr("epsilon", 1e-5))
    mean = _emit(ctx, Reduce(axes, True, x.shape, mean=True), [x], False)
    centred = _emit(ctx, Add2(x.shape, mean.shape, 1.0, -1.0), [x, mean], False)
    square = _emit(ctx, Pow(2.0), [centred], False)
    variance = _emit(ctx, Reduce(axes, True, square.shape, mean=True), [square], False)
    std = _emit(ctx, Sqrt(), [_affine(ctx, variance, 1.0, eps)], False)
    inv_std = _emit(ctx, Reciprocal(), [std], False)
    normalized = _emit(ctx, Mul2(), [centred, inv_std], False)   # same rank: the means keep their axes
    scale = _check_finite(ctx, ctx.const(1, float_=True))
    bias = _check_finite(ctx, ctx.const(2, float_=True)) if ctx.has_input(2) else torch.zeros(())
    if per_channel is not None:
        scale, bias = scale.reshape(per_channel), bias.reshape(per_channel)
    return _affine(ctx, normalized, scale, bias, final=True)


@register("Gelu")
def build_gelu(ctx: NodeContext):
    """Exact Gelu as one relaxed op; the tanh approximation as its formula
    ``x * (1/2 + tanh(sqrt(2/pi) (x + 0.044715 x^3)) / 2)`` (a product of
    relaxed parts: sound, looser than a dedicated relaxation)."""
    from bounds.ops.activations import GELU, Pow, Tanh
    from bounds.ops.product import Mul2
    x = ctx.var(0)
    approximate = ctx.attr("approximate", b"none")
    if (approximate.decode() if isinstance(approximate, bytes) else approximate) == "none":
        return _emit(ctx, GELU(), [x], True)
    k = math.sqrt(2.0 / math.pi)
    cube = _emit(ctx, Pow(3.0), [x], False)
    inner = _emit(ctx, Add2(x.shape, cube.shape, k, k * 0.044715), [x, cube], False)
    half = _affine(ctx, _emit(ctx, Tanh(), [inner], False), 0.5, 0.5)
    return _emit(ctx, Mul2(), [x, half], True)
