"""Products of two bounded variables (McCormick-style planes)."""
from __future__ import annotations

import torch

from bounds.ops.base import Operator


class Mul2(Operator):
    """Element-wise ``x * y`` of two variable tensors (numpy broadcasting)."""

    op_type = "Mul2"
    is_linear = False
    num_inputs = 2

    def forward(self, x, y):
        return x * y


class MatMul2(Operator):
    """``x @ y`` of two variable tensors (batched matmul on the last two axes)."""

    op_type = "MatMul2"
    is_linear = False
    num_inputs = 2

    def forward(self, x, y):
        return torch.matmul(x, y)
