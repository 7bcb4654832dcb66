"""Linear (fully connected) layer on the last axis: ``y = x W^T + b``.

Covers ONNX Gemm and MatMul/Add with a constant matrix.
"""
from __future__ import annotations

import torch

from bounds.ops.base import BackwardContext, Operator, sum_tail, weight_parts
from bounds.ops.broadcast import broadcast_shape, lift_rank, sum_to_shape
from bounds.ops.registry import BuildError, NodeContext, Var, register


class Linear(Operator):
    op_type = "Linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight  # (out, in)
        self.bias = bias      # (out,) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def signed_parts(self):
        return weight_parts(self, "weight", "bias")

    def interval(self, bounds):
        """``y_c = W c + b``, ``y_r = |W| r`` with ``c``, ``r`` the box centre and radius."""
        lower, upper = bounds
        center = (upper + lower) / 2
        radius = (upper - lower) / 2
        y_center = torch.nn.functional.linear(center, self.weight, self.bias)
        y_radius = torch.nn.functional.linear(radius, self.weight.abs())
        return y_center - y_radius, y_center + y_radius

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        """``sum(A * (x W^T + b)) = sum((A W) * x) + sum(A * b)``."""
        A_in = A.matmul(self.weight)
        bias = sum_tail(A * self.bias) if self.bias is not None else 0.0
        return [A_in], bias

    def __repr__(self) -> str:
        return f"Linear({self.weight.shape[1]}->{self.weight.shape[0]})"


class MatMulConst(Operator):
    """Matrix product with a constant tensor of rank >= 2 (numpy matmul broadcasting).

    ``side == "right"``: ``y = x @ W``;  ``side == "left"``: ``y = W @ x``.
    Batch axes of ``W`` broadcast against the per-sample batch axes of ``x``.
    """

    op_type = "MatMulConst"

    def __init__(self, weight: torch.Tensor, side: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        self.weight = weight
        self.side = side
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    def _apply(self, x, weight):
        x = lift_rank(x, len(self.out_shape))
        return torch.matmul(x, weight) if self.side == "right" else torch.matmul(weight, x)

    def forward(self, x):
        return self._apply(x, self.weight)

    def signed_parts(self):
        return weight_parts(self, "weight", None)

    def interval(self, bounds):
        lower, upper = bounds
        y_center = self._apply((upper + lower) / 2, self.weight)
        y_radius = self._apply((upper - lower) / 2, self.weight.abs())
        return y_center - y_radius, y_center + y_radius

    def backward(self, A, ctx: BackwardContext):
        """``sum(A*(x W)) = sum((A W^T) * x)``; ``sum(A*(W x)) = sum((W^T A) * x)``."""
        w_t = self.weight.transpose(-1, -2)
        A_in = torch.matmul(A, w_t) if self.side == "right" else torch.matmul(w_t, A)
        return [sum_to_shape(A_in, self.in_shape)], 0.0

    def __repr__(self):
        return f"MatMulConst({self.side}, W{list(self.weight.shape)})"


def _matmul_var_const(ctx: NodeContext, x: Var, weight: torch.Tensor, output_index):
    """``x @ W`` for a variable ``x`` and constant ``W``."""
    if weight.dim() == 2:
        return ctx.emit(Linear(weight.t().contiguous()), [x], output_index)
    if weight.dim() == 1:
        from bounds.ops.shape_ops import Reshape
        y = ctx.emit(Linear(weight.reshape(1, -1)), [x])
        return ctx.emit(Reshape(y.shape[:-1]), [y], output_index)
    if x.rank < 2:
        raise BuildError("MatMul of a vector with a batched constant")
    out_shape = broadcast_shape(x.shape[:-2], tuple(weight.shape[:-2])) + (x.shape[-2], weight.shape[-1])
    return ctx.emit(MatMulConst(weight, "right", x.shape, out_shape), [x], output_index)


def _matmul_const_var(ctx: NodeContext, weight: torch.Tensor, x: Var, output_index):
    """``W @ x`` for a constant ``W`` and variable ``x`` (rank >= 2 each)."""
    if weight.dim() < 2 or x.rank < 2:
        raise BuildError("MatMul of a constant vector with a variable")
    out_shape = broadcast_shape(x.shape[:-2], tuple(weight.shape[:-2])) + (weight.shape[-2], x.shape[-1])
    return ctx.emit(MatMulConst(weight, "left", x.shape, out_shape), [x], output_index)


def _matmul_two_vars(ctx: NodeContext, x: Var, z: Var, output_index):
    from bounds.ops.product import MatMul2
    from bounds.ops.shape_ops import match_ranks
    if x.rank < 2 or z.rank < 2:
        raise BuildError("MatMul of two variables needs rank >= 2 operands")
    x, z = match_ranks(ctx, x, z)
    return ctx.emit(MatMul2(), [x, z], output_index)


@register("MatMul")
def build_matmul(ctx: NodeContext):
    if ctx.is_var(0) and ctx.is_var(1):
        return _matmul_two_vars(ctx, ctx.var(0), ctx.var(1), 0)
    if ctx.is_var(0):
        return _matmul_var_const(ctx, ctx.var(0), ctx.const(1, float_=True), 0)
    return _matmul_const_var(ctx, ctx.const(0, float_=True), ctx.var(1), 0)


@register("Gemm")
def build_gemm(ctx: NodeContext):
    """``Y = alpha * A' B' + beta * C`` with ``A' = A^T`` if transA, etc."""
    from bounds.ops.elementwise_affine import ElementwiseAffine
    from bounds.ops.shape_ops import Transpose

    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    bias = ctx.const(2, float_=True) * beta if ctx.has_input(2) else None
    if bias is not None and ctx.is_var(2):
        raise BuildError("Gemm with a variable C")
    if ctx.is_var(0) and ctx.is_const(1):
        x = ctx.var(0)
        if trans_a:
            x = ctx.emit(Transpose((1, 0)), [x])
        b = ctx.const(1, float_=True)
        weight = (b if trans_b else b.t()) * alpha  # (out, in)
        out = weight.shape[0]
        if bias is None or bias.numel() in (1, out) and bias.dim() <= 1 or (bias.dim() == 2 and bias.shape[0] == 1):
            vec = None if bias is None else bias.reshape(-1).expand(out).contiguous()
            return ctx.emit(Linear(weight.contiguous(), vec), [x], 0)
        y = ctx.emit(Linear(weight.contiguous()), [x])
        return ctx.emit(ElementwiseAffine(torch.ones(()), bias, y.shape), [y], 0)
    # constant or variable A with a variable B: fall back to MatMul pieces
    a = ctx.inputs[0]
    b = ctx.inputs[1]
    if isinstance(a, Var) and trans_a:
        a = ctx.emit(Transpose((1, 0)), [a])
    elif isinstance(a, torch.Tensor) and trans_a:
        a = a.t()
    if isinstance(b, Var) and trans_b:
        b = ctx.emit(Transpose((1, 0)), [b])
    elif isinstance(b, torch.Tensor) and trans_b:
        b = b.t()
    if isinstance(a, Var) and isinstance(b, Var):
        y = _matmul_two_vars(ctx, a, b, None)
    else:
        y = _matmul_const_var(ctx, a.to(torch.float32), b, None)
    scale = torch.full((), alpha)
    shift = bias if bias is not None else torch.zeros(())
    return ctx.emit(ElementwiseAffine(scale, shift, y.shape), [y], 0)
