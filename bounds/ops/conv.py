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

from bounds.ops.base import BackwardContext, Operator, sum_tail, weight_parts
from bounds.ops.registry import BuildError, NodeContext, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _on_flat(x: torch.Tensor, dims: int, fn) -> torch.Tensor:
    """``fn`` on ``x`` with every axis before ``(C, *spatial)`` flattened into
    the torch batch axis; the leading axes are restored on the result."""
    lead = x.shape[:-(dims + 1)]
    y = fn(x.reshape(-1, *x.shape[-(dims + 1):]))
    return y.reshape(*lead, *y.shape[1:])


def _torch_pads(pads: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX (begins..., ends...) -> torch F.pad order (last axis first)."""
    d = len(pads) // 2
    out = []
    for axis in reversed(range(d)):
        out += [pads[axis], pads[axis + d]]
    return tuple(out)


def _crop(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Remove ONNX ``pads`` (begins..., ends...) from the spatial axes."""
    return F.pad(x, tuple(-p for p in _torch_pads(pads)))


class _ConvolutionBase(Operator):
    """Shared by Conv and ConvTranspose: ``y = L(x, W) + b`` with ``L`` linear
    in ``x`` and in ``W`` (subclasses give ``_apply``)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    dims: int
    strides: tuple[int, ...]
    pads: tuple[int, ...]

    def _apply(self, x, weight, bias):
        raise NotImplementedError

    def forward(self, x):
        return self._apply(x, self.weight, self.bias)

    def signed_parts(self):
        return weight_parts(self, "weight", "bias")

    def interval(self, bounds):
        """Centre/radius form: ``L(c, W) + b -+ L(r, |W|)``."""
        lower, upper = bounds
        center = self._apply((upper + lower) / 2, self.weight, self.bias)
        radius = self._apply((upper - lower) / 2, self.weight.abs(), None)
        return center - radius, center + radius

    def _bias_term(self, A: torch.Tensor):
        """``sum(A * b)`` per row, ``b`` broadcast over the spatial axes."""
        if self.bias is None:
            return 0.0
        return sum_tail(A.sum(dim=tuple(range(A.dim() - self.dims, A.dim()))) * self.bias)

    def __repr__(self):
        return f"{self.op_type}(W{list(self.weight.shape)}, stride={self.strides}, pads={self.pads})"


class Conv(_ConvolutionBase):
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

    def _apply(self, x, weight, bias):
        d = self.dims

        def conv(flat):
            if self.symmetric:
                return _CONV[d](flat, weight, bias, self.strides, self.pads[:d], self.dilations, self.group)
            return _CONV[d](F.pad(flat, _torch_pads(self.pads)), weight, bias, self.strides, 0,
                            self.dilations, self.group)
        return _on_flat(x, d, conv)

    def backward(self, A, ctx: BackwardContext):
        """``sum(A * conv(x)) = sum(conv_transpose(A) * x) + sum(A * b)``."""
        d = self.dims

        def adjoint(flat):
            if self.symmetric:
                return _CONV_T[d](flat, self.weight, None, self.strides, self.pads[:d], self.output_padding,
                                  self.group, self.dilations)
            return _crop(_CONV_T[d](flat, self.weight, None, self.strides, 0, self.output_padding,
                                    self.group, self.dilations), self.pads)
        return [_on_flat(A, d, adjoint)], self._bias_term(A)


class ConvTranspose(_ConvolutionBase):
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

    def _apply(self, x, weight, bias):
        def conv_t(flat):
            y = _CONV_T[self.dims](flat, weight, bias, self.strides, 0, self.output_padding, self.group,
                                   self.dilations)
            return _crop(y, self.pads) if any(self.pads) else y
        return _on_flat(x, self.dims, conv_t)

    def backward(self, A, ctx: BackwardContext):
        """Adjoint of the cropped transposed convolution: zero-pad back, then convolve."""
        d = self.dims

        def adjoint(flat):
            if any(self.pads):
                flat = F.pad(flat, _torch_pads(self.pads))
            return _CONV[d](flat, self.weight, None, self.strides, 0, self.dilations, self.group)
        return [_on_flat(A, d, adjoint)], self._bias_term(A)


def _text(value, default):
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else value


def _same_pads(total: list[int], auto_pad: str) -> list[int]:
    begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    return begins + [t - b for t, b in zip(total, begins)]


def _common_attrs(ctx: NodeContext, kind: str):
    """Input, constant weight/bias, spatial dims, strides and dilations of a Conv/ConvTranspose node."""
    x = ctx.var(0)
    if not ctx.is_const(1) or (ctx.has_input(2) and not ctx.is_const(2)):
        raise BuildError(f"{kind} with variable weights")
    weight = ctx.const(1, float_=True)
    bias = ctx.const(2, float_=True) if ctx.has_input(2) else None
    d = weight.dim() - 2
    strides = list(ctx.attr("strides", [1] * d))
    dilations = list(ctx.attr("dilations", [1] * d))
    return x, weight, bias, d, strides, dilations


@register("Conv")
def build_conv(ctx: NodeContext):
    x, weight, bias, d, strides, dilations = _common_attrs(ctx, "Conv")
    if d not in _CONV or x.rank < d + 1:
        raise BuildError(f"Conv with {d} spatial dims on rank {x.rank}")
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
    x, weight, bias, d, strides, dilations = _common_attrs(ctx, "ConvTranspose")
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
