"""Softmax along one axis: ``y_i = exp(x_i) / sum_j exp(x_j)``."""
from __future__ import annotations

import torch

from bounds.ops.base import Operator


class Softmax(Operator):
    """ONNX Softmax (opset >= 13 semantics: a single axis).

    ``axis`` is the non-negative ONNX axis of the per-sample tensor; the
    runtime tensor has an extra leading batch axis, hence ``dim = axis + 1``.
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

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"
