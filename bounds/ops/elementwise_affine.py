"""Element-wise affine map with constant tensors: ``y = x * scale + bias``.

Covers Add/Sub/Mul/Div/Neg where one operand is constant, and BatchNorm in
inference mode when it cannot be folded into a preceding layer.  ``scale`` and
``bias`` broadcast (numpy rules, on the per-sample shape) against ``x``; the
output may be larger than ``x`` when a constant has more/larger axes, in which
case ``backward`` sums the coefficients back over the broadcast axes.
"""
from __future__ import annotations

import torch

from bounds.ops.add import Add2
from bounds.ops.base import BackwardContext, Operator, sum_tail, weight_parts
from bounds.ops.broadcast import broadcast_shape, lift_rank, sum_to_shape
from bounds.ops.registry import BuildError, NodeContext, register


class ElementwiseAffine(Operator):
    op_type = "Affine"

    def __init__(self, scale: torch.Tensor, bias: torch.Tensor, in_shape: tuple[int, ...]):
        self.in_shape = tuple(in_shape)
        self.out_shape = broadcast_shape(self.in_shape, tuple(scale.shape), tuple(bias.shape))
        self.scale = scale
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lift_rank(x, len(self.out_shape)) * self.scale + self.bias

    def signed_parts(self):
        return weight_parts(self, "scale", "bias")

    def interval(self, bounds):
        """Centre ``c*s + b``, radius ``r*|s|``: exact for an affine map."""
        lower, upper = bounds
        center = lift_rank((upper + lower) / 2, len(self.out_shape))
        radius = lift_rank((upper - lower) / 2, len(self.out_shape))
        y_center = center * self.scale + self.bias
        y_radius = radius * self.scale.abs()
        return y_center - y_radius, y_center + y_radius

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        """``sum(A*(x*s+b)) = sum(sum_bcast(A*s) * x) + sum(A*b)``."""
        A_in = sum_to_shape(A * self.scale, self.in_shape)
        bias = sum_tail(A * self.bias) if bool((self.bias != 0).any()) else 0.0
        if isinstance(bias, torch.Tensor) and bias.dim() < 2:
            bias = bias.reshape(A.shape[0], A.shape[1])
        return [A_in], bias

    def then(self, scale: torch.Tensor, bias: torch.Tensor) -> "ElementwiseAffine":
        """The composition ``(x*s1 + b1)*s2 + b2`` as one affine op."""
        return ElementwiseAffine(self.scale * scale, self.bias * scale + bias, self.in_shape)

    def __repr__(self) -> str:
        return f"ElementwiseAffine(scale{list(self.scale.shape)}, bias{list(self.bias.shape)})"


def _affine(ctx: NodeContext, x_index: int, scale, bias):
    x = ctx.var(x_index)
    one = torch.ones((), dtype=torch.float32)
    scale = one * scale if not isinstance(scale, torch.Tensor) else scale.to(torch.float32)
    bias = one * bias if not isinstance(bias, torch.Tensor) else bias.to(torch.float32)
    return ctx.emit(ElementwiseAffine(scale, bias, x.shape), [x], 0)


@register("Add", "Sub", "Mul", "Div")
def build_binary_arith(ctx: NodeContext):
    op = ctx.op_type
    if ctx.is_var(0) and ctx.is_var(1):
        x, y = ctx.var(0), ctx.var(1)
        if op in ("Add", "Sub"):
            return ctx.emit(Add2(x.shape, y.shape, 1.0, 1.0 if op == "Add" else -1.0), [x, y], 0)
        from bounds.ops.product import Mul2
        from bounds.ops.shape_ops import match_ranks
        x, y = match_ranks(ctx, x, y)
        if op == "Mul":
            return ctx.emit(Mul2(), [x, y], 0)
        from bounds.ops.activations import Reciprocal
        inv_y = ctx.emit(Reciprocal(), [y])
        return ctx.emit(Mul2(), [x, inv_y], 0)
    var_index = 0 if ctx.is_var(0) else 1
    c = ctx.const(1 - var_index, float_=True)
    if op == "Add":
        return _affine(ctx, var_index, 1.0, c)
    if op == "Sub":
        return _affine(ctx, 0, 1.0, -c) if var_index == 0 else _affine(ctx, 1, -1.0, c)
    if op == "Mul":
        return _affine(ctx, var_index, c, 0.0)
    if var_index == 0:
        return _affine(ctx, 0, 1.0 / c, 0.0)
    from bounds.ops.activations import Reciprocal
    inv = ctx.emit(Reciprocal(), [ctx.var(1)])
    return ctx.emit(ElementwiseAffine(c, torch.zeros(()), inv.shape), [inv], 0)


@register("Neg")
def build_neg(ctx: NodeContext):
    return _affine(ctx, 0, -1.0, 0.0)


def batchnorm_scale_bias(ctx: NodeContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as per-channel ``scale = g/sqrt(v+eps)``, ``bias = b - m*scale``."""
    gamma, beta, mean, var = (ctx.const(i, float_=True).to(torch.float64) for i in range(1, 5))
    eps = float(ctx.attr("epsilon", 1e-5))
    scale = gamma / torch.sqrt(var + eps)
    bias = beta - mean * scale
    return scale.to(torch.float32), bias.to(torch.float32)


@register("BatchNormalization")
def build_batchnorm(ctx: NodeContext):
    if ctx.num_outputs > 1 or int(ctx.attr("training_mode", 0)):
        raise BuildError("BatchNormalization in training mode")
    x = ctx.var(0)
    if x.rank < 2:
        raise BuildError("BatchNormalization needs rank >= 2")
    scale, bias = batchnorm_scale_bias(ctx)
    trailing = (1,) * (x.rank - 2)  # channels on ONNX axis 1
    return ctx.emit(ElementwiseAffine(scale.reshape(-1, *trailing), bias.reshape(-1, *trailing), x.shape), [x], 0)
