"""MaxPool: the maximum over each window (a nonlinear, non-element-wise op)."""
from __future__ import annotations

import torch

from bounds.ops.base import Operator


class MaxPool(Operator):
    op_type = "MaxPool"
    is_linear = False

    def __init__(self, kernel_shape, strides, pads, dilations=None, ceil_mode: bool = False):
        self.kernel_shape = tuple(kernel_shape)
        self.strides = tuple(strides)
        self.pads = tuple(pads)  # ONNX order: (begin..., end...)
        self.dilations = tuple(dilations or (1,) * len(self.kernel_shape))
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        raise NotImplementedError("MaxPool.forward: to be written with its relaxation")
