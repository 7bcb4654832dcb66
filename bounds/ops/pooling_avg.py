"""AveragePool as a depthwise convolution with a constant kernel.

``y = conv(x, 1/k) `` when padding is counted (or absent); otherwise
``y = conv(x, 1) / count`` with ``count`` the number of real (non-pad)
inputs in each window, a constant map computed at import time.
"""
from __future__ import annotations

import math

import torch

from bounds.ops.base import BackwardContext, Operator
from bounds.ops.conv import Conv
from bounds.ops.registry import BuildError, NodeContext, register


class AveragePool(Operator):
    op_type = "AveragePool"
    input_signs = (1,)   # a window mean: no negative weight

    def __init__(self, conv: Conv, inv_count: torch.Tensor | None):
        self.conv = conv            # depthwise conv, kernel of ones (or 1/k)
        self.inv_count = inv_count  # (C, *out_spatial) or None

    def forward(self, x):
        y = self.conv.forward(x)
        return y if self.inv_count is None else y * self.inv_count

    def interval(self, bounds):
        lower, upper = self.conv.interval(bounds)
        if self.inv_count is None:
            return lower, upper
        return lower * self.inv_count, upper * self.inv_count

    def backward(self, A, ctx: BackwardContext):
        if self.inv_count is not None:
            A = A * self.inv_count
        return self.conv.backward(A, ctx)

    def to(self, device=None, dtype=None):
        self.conv.to(device=device, dtype=dtype)
        if self.inv_count is not None:
            self.inv_count = self.inv_count.to(device=device, dtype=dtype)
        return self


@register("AveragePool")
def build_average_pool(ctx: NodeContext):
    x = ctx.var(0)
    kernel = list(ctx.attr("kernel_shape"))
    d = len(kernel)
    if x.rank < d + 1:
        raise BuildError("AveragePool input rank too small")
    if int(ctx.attr("ceil_mode", 0)):
        raise BuildError("AveragePool with ceil_mode=1")
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise BuildError(f"AveragePool auto_pad={auto_pad}")
    strides = list(ctx.attr("strides", [1] * d))
    dilations = list(ctx.attr("dilations", [1] * d))
    pads = [0] * (2 * d) if auto_pad == "VALID" else list(ctx.attr("pads", [0] * (2 * d)))
    channels = x.shape[-d - 1]
    ones = torch.ones(channels, 1, *kernel)
    include_pad = bool(ctx.attr("count_include_pad", 0)) or not any(pads)
    if include_pad:
        conv = Conv(ones / math.prod(kernel), None, strides, pads, dilations, channels, x.shape)
        return ctx.emit(AveragePool(conv, None), [x], 0)
    conv = Conv(ones, None, strides, pads, dilations, channels, x.shape)
    count = conv.forward(torch.ones(1, *x.shape[-d - 1:]))[0]
    return ctx.emit(AveragePool(conv, 1.0 / count), [x], 0)
