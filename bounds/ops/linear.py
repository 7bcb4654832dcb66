"""Linear (fully connected) layer on the last axis: ``y = x W^T + b``.

Covers ONNX Gemm and MatMul/Add with a constant matrix.
"""
from __future__ import annotations

import torch

from bounds.ops.base import BackwardContext, Operator, sum_tail


class Linear(Operator):
    op_type = "Linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight  # (out, in)
        self.bias = bias      # (out,) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)

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
