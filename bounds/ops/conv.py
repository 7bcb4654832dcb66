"""Convolution and transposed convolution with constant weights (1-3 spatial dims).

A per-sample value ``(N, C, *spatial)`` (N is the ONNX batch axis, usually 1)
travels as ``(B, N, C, *spatial)``; every leading axis is flattened into the
torch batch axis.  ``backward`` is the adjoint map: a transposed convolution
for Conv and a convolution for ConvTranspose, applied to the ``B*S*N``
flattened coefficient rows, so no dense Jacobian is ever built.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bounds.ops.base import BackwardContext, Operator, sum_tail
from bounds.ops.registry import BuildError, NodeContext, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _flat(x: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Size]:
    lead = x.shape[:-(dims + 1)]
    return x.reshape(-1, *x.shape[-(dims + 1):]), lead


def _torch_pads(pads: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX (begins..., ends...) -> torch F.pad order (last axis first)."""
    d = len(pads) // 2
    out = []
    for axis in reversed(range(d)):
        out += [pads[axis], pads[axis + d]]
    return tuple(out)


class Conv(Operator):
    """``y = conv(x, W) + b`` with ONNX strides/pads/dilations/group."""

    op_type = "Conv"

    def __init__(self, weight, bias, strides, pads, dilations, group: int, in_shape):
        self.weight = weight  # (C_out, C_in/group, *k)
        self.bias = bias      # (C_out,) or None
        self.dims = weight.dim() - 2
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.group = int(group)
        self.pads = tuple(pads)
        self.in_shape = tuple(in_shape)
        d = self.dims
        self.symmetric = all(self.pads[i] == self.pads[i + d] for i in range(d))
        spatial = self.in_shape[-d:]
        padded = [spatial[i] + self.pads[i] + self.pads[i + d] for i in range(d)]
        ksize = [self.dilations[i] * (weight.shape[2 + i] - 1) + 1 for i in range(d)]
        self.out_spatial = tuple((padded[i] - ksize[i]) // self.strides[i] + 1 for i in range(d))
        # rows of the padded input that the last window does not reach
        self.output_padding = tuple(padded[i] - ((self.out_spatial[i] - 1) * self.strides[i] + ksize[i])
                                    for i in range(d))

    def _conv(self, x, weight, bias):
        flat, lead = _flat(x, self.dims)
        if self.symmetric:
            y = _CONV[self.dims](flat, weight, bias, self.strides, self.pads[:self.dims], self.dilations, self.group)
        else:
            y = _CONV[self.dims](F.pad(flat, _torch_pads(self.pads)), weight, bias, self.strides, 0,
                                 self.dilations, self.group)
        return y.reshape(*lead, *y.shape[1:])

    def forward(self, x):
        return self._conv(x, self.weight, self.bias)

    def interval(self, bounds):
        lower, upper = bounds
        center = self._conv((upper + lower) / 2, self.weight, self.bias)
        radius = self._conv((upper - lower) / 2, self.weight.abs(), None)
        return center - radius, center + radius

    def backward(self, A, ctx: BackwardContext):
        """``sum(A * conv(x)) = sum(conv_transpose(A) * x) + sum(A * b)``."""
        flat, lead = _flat(A, self.dims)
        d = self.dims
        if self.symmetric:
            A_in = _CONV_T[d](flat, self.weight, None, self.strides, self.pads[:d], self.output_padding,
                              self.group, self.dilations)
        else:
            A_in = _CONV_T[d](flat, self.weight, None, self.strides, 0, self.output_padding,
                              self.group, self.dilations)
            A_in = F.pad(A_in, tuple(-p for p in _torch_pads(self.pads)))
        A_in = A_in.reshape(*lead, *A_in.shape[1:])
        bias = 0.0
        if self.bias is not None:
            bias = sum_tail(A.sum(dim=tuple(range(A.dim() - d, A.dim()))) * self.bias)
        return [A_in], bias

    def __repr__(self):
        return f"Conv(W{list(self.weight.shape)}, stride={self.strides}, pads={self.pads})"


class ConvTranspose(Operator):
    """``y = conv_transpose(x, W) + b``; ONNX pads crop the full output (begins, ends)."""

    op_type = "ConvTranspose"

    def __init__(self, weight, bias, strides, pads, dilations, group: int, output_padding):
        self.weight = weight  # (C_in, C_out/group, *k)
        self.bias = bias
        self.dims = weight.dim() - 2
        self.strides = tuple(strides)
        self.pads = tuple(pads)
        self.dilations = tuple(dilations)
        self.group = int(group)
        self.output_padding = tuple(output_padding)

    def _conv_t(self, x, weight, bias):
        flat, lead = _flat(x, self.dims)
        y = _CONV_T[self.dims](flat, weight, bias, self.strides, 0, self.output_padding, self.group, self.dilations)
        if any(self.pads):
            y = F.pad(y, tuple(-p for p in _torch_pads(self.pads)))
        return y.reshape(*lead, *y.shape[1:])

    def forward(self, x):
        return self._conv_t(x, self.weight, self.bias)

    def interval(self, bounds):
        lower, upper = bounds
        center = self._conv_t((upper + lower) / 2, self.weight, self.bias)
        radius = self._conv_t((upper - lower) / 2, self.weight.abs(), None)
        return center - radius, center + radius

    def backward(self, A, ctx: BackwardContext):
        """Adjoint of the cropped transposed convolution: zero-pad back, then convolve."""
        d = self.dims
        flat, lead = _flat(A, d)
        if any(self.pads):
            flat = F.pad(flat, _torch_pads(self.pads))
        A_in = _CONV[d](flat, self.weight, None, self.strides, 0, self.dilations, self.group)
        A_in = A_in.reshape(*lead, *A_in.shape[1:])
        bias = 0.0
        if self.bias is not None:
            bias = sum_tail(A.sum(dim=tuple(range(A.dim() - d, A.dim()))) * self.bias)
        return [A_in], bias

    def __repr__(self):
        return f"ConvTranspose(W{list(self.weight.shape)}, stride={self.strides}, pads={self.pads})"


def _text(value, default):
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else value


def _same_pads(total: list[int], auto_pad: str) -> list[int]:
    begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    return begins + [t - b for t, b in zip(total, begins)]


@register("Conv")
def build_conv(ctx: NodeContext):
    x = ctx.var(0)
    if not ctx.is_const(1) or (ctx.has_input(2) and not ctx.is_const(2)):
        raise BuildError("Conv with variable weights")
    weight = ctx.const(1, float_=True)
    bias = ctx.const(2, float_=True) if ctx.has_input(2) else None
    d = weight.dim() - 2
    if d not in _CONV or x.rank < d + 1:
        raise BuildError(f"Conv with {d} spatial dims on rank {x.rank}")
    strides = list(ctx.attr("strides", [1] * d))
    dilations = list(ctx.attr("dilations", [1] * d))
    auto_pad = _text(ctx.attr("auto_pad"), "NOTSET")
    spatial = x.shape[-d:]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = []
        for i in range(d):
            out = -(-spatial[i] // strides[i])
            k = dilations[i] * (weight.shape[2 + i] - 1) + 1
            total.append(max((out - 1) * strides[i] + k - spatial[i], 0))
        pads = _same_pads(total, auto_pad)
    elif auto_pad == "VALID":
        pads = [0] * (2 * d)
    else:
        pads = list(ctx.attr("pads", [0] * (2 * d)))
    op = Conv(weight, bias, strides, pads, dilations, int(ctx.attr("group", 1)), x.shape)
    return ctx.emit(op, [x], 0)


@register("ConvTranspose")
def build_conv_transpose(ctx: NodeContext):
    x = ctx.var(0)
    if not ctx.is_const(1) or (ctx.has_input(2) and not ctx.is_const(2)):
        raise BuildError("ConvTranspose with variable weights")
    weight = ctx.const(1, float_=True)
    bias = ctx.const(2, float_=True) if ctx.has_input(2) else None
    d = weight.dim() - 2
    strides = list(ctx.attr("strides", [1] * d))
    dilations = list(ctx.attr("dilations", [1] * d))
    output_padding = list(ctx.attr("output_padding", [0] * d))
    spatial = x.shape[-d:]
    full = [strides[i] * (spatial[i] - 1) + output_padding[i] + dilations[i] * (weight.shape[2 + i] - 1) + 1
            for i in range(d)]
    auto_pad = _text(ctx.attr("auto_pad"), "NOTSET")
    if "output_shape" in ctx.attrs:
        target = list(ctx.attr("output_shape"))[-d:]
        total = [full[i] - target[i] for i in range(d)]
        pads = _same_pads(total, "SAME_LOWER" if auto_pad == "SAME_LOWER" else "SAME_UPPER")
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [full[i] - spatial[i] * strides[i] for i in range(d)]
        pads = _same_pads(total, auto_pad)
    else:
        pads = list(ctx.attr("pads", [0] * (2 * d)))
    if any(p < 0 for p in pads):
        raise BuildError("ConvTranspose with negative padding")
    op = ConvTranspose(weight, bias, strides, pads, dilations, int(ctx.attr("group", 1)), output_padding)
    return ctx.emit(op, [x], 0)
