"""Softmax along one axis: ``y_i = exp(x_i) / sum_j exp(x_j)``."""
from __future__ import annotations

import math

import torch

from bounds.ops.base import Operator, sum_tail


class Softmax(Operator):
    """ONNX Softmax (opset >= 13 semantics: a single axis).

    ``axis`` is the non-negative ONNX axis of the per-sample tensor; the
    runtime tensor has an extra leading batch axis, hence ``dim = axis + 1``.

    Bounds: ``y_i = 1 / (1 + sum_{j != i} exp(x_j - x_i))`` is increasing in
    ``x_i`` and decreasing in every other ``x_j``, so

        y_i >= exp(l_i - logsumexp(l_i, u_j for j != i))
        y_i <= exp(u_i - logsumexp(u_i, l_j for j != i))

    (exact at the box corners; ``O(n^2)`` per softmax row).  ``backward`` uses
    these constant bounds.
    """

    op_type = "Softmax"
    is_linear = False

    def __init__(self, axis: int):
        if axis < 0:
            raise ValueError(f"Softmax: axis must be normalized to >= 0, got {axis}")
        self.axis = int(axis)

    @property
    def dim(self) -> int:
        return self.axis + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.dim)

    def interval(self, bounds):
        lower, upper = bounds
        dtype = lower.dtype
        wd = dtype if lower.device.type == "mps" else torch.float64
        low = lower.to(wd).movedim(self.dim, -1)
        up = upper.to(wd).movedim(self.dim, -1)
        n = low.shape[-1]
        diag = torch.eye(n, dtype=torch.bool, device=low.device)
        # row i of the n x n matrix: own bound on the diagonal, others' opposite bound
        worst_low = torch.where(diag, low.unsqueeze(-1), up.unsqueeze(-2))
        worst_up = torch.where(diag, up.unsqueeze(-1), low.unsqueeze(-2))
        y_low = torch.exp(low - torch.logsumexp(worst_low, dim=-1))
        y_up = torch.exp(up - torch.logsumexp(worst_up, dim=-1))
        eps = torch.finfo(dtype).eps
        y_low = (y_low * (1 - 4 * eps)).clamp(0, 1)
        y_up = (y_up * (1 + 4 * eps) + torch.finfo(dtype).tiny).clamp(0, 1)
        y_low = torch.nan_to_num(y_low, nan=0.0)
        y_up = torch.nan_to_num(y_up, nan=1.0)
        return y_low.movedim(-1, self.dim).to(dtype), y_up.movedim(-1, self.dim).to(dtype)

    def backward(self, A: torch.Tensor, ctx):
        y_low, y_up = self.interval(ctx.input_bounds[0])
        bias = sum_tail(A.clamp(min=0) * y_low.unsqueeze(1) + A.clamp(max=0) * y_up.unsqueeze(1))
        return [torch.zeros_like(A)], bias

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"
