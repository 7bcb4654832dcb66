"""ONNX Resize / Upsample: nearest (an index selection) and linear modes.

Both are linear maps with non-negative weights, applied axis by axis.  Each
output index ``o`` of a resized axis reads the source coordinate

    half_pixel:          (o + 1/2) / scale - 1/2
    pytorch_half_pixel:  the same, or 0 when the output has length 1
    align_corners:       o (n_in - 1) / (n_out - 1)
    asymmetric:          o / scale

``nearest`` rounds it (per ``nearest_mode``) to one index (:class:`AxisSelect`);
``linear`` takes ``(1 - r) x[i] + r x[i + 1]`` with ``i = floor(c)``,
``r = c - i`` and indices clamped to the axis (edge padding), a constant
matrix per axis (:class:`AxisInterpolate`).
"""
from __future__ import annotations

import math

import torch

from bounds.ops.base import BackwardContext, Operator
from bounds.ops.registry import BuildError, NodeContext, register
from bounds.ops.shape_ops import AxisSelect


def source_coordinates(out_size: int, in_size: int, scale: float, coord_mode: str) -> torch.Tensor:
    """Source coordinate (float64) of every output index along one axis."""
    dst = torch.arange(out_size, dtype=torch.float64)
    if coord_mode == "asymmetric":
        return dst / scale
    if coord_mode == "align_corners":
        return dst * (in_size - 1) / max(out_size - 1, 1)
    if coord_mode == "pytorch_half_pixel":
        return (dst + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(dst)
    if coord_mode in ("half_pixel", "tf_half_pixel_for_nn"):
        return (dst + 0.5) / scale - (0.5 if coord_mode == "half_pixel" else 0.0)
    raise BuildError(f"Resize coordinate_transformation_mode {coord_mode!r}")


def nearest_source(src: torch.Tensor, in_size: int, nearest_mode: str) -> torch.Tensor:
    """Index read by every output index (ONNX ``nearest_mode`` rounding)."""
    if nearest_mode == "floor":
        idx = torch.floor(src)
    elif nearest_mode == "ceil":
        idx = torch.ceil(src)
    elif nearest_mode == "round_prefer_ceil":
        idx = torch.floor(src + 0.5)
    else:  # round_prefer_floor (default)
        idx = torch.ceil(src - 0.5)
    return idx.clamp(0, in_size - 1).to(torch.long)


def linear_weights(src: torch.Tensor, in_size: int) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of linear interpolation at ``src``, edge-padded."""
    low = torch.floor(src)
    frac = src - low
    low = low.to(torch.long)
    matrix = torch.zeros(src.numel(), in_size, dtype=torch.float64)
    rows = torch.arange(src.numel())
    matrix.index_put_((rows, low.clamp(0, in_size - 1)), 1 - frac, accumulate=True)
    matrix.index_put_((rows, (low + 1).clamp(0, in_size - 1)), frac, accumulate=True)
    return matrix


class AxisInterpolate(Operator):
    """``y = x`` multiplied along each listed axis by a constant matrix with
    non-negative entries ``(n_out, n_in)`` (linear Resize).

    IBP maps lower to lower and upper to upper (monotone); ``backward``
    applies the transposed matrices in reverse order."""

    op_type = "ResizeLinear"
    input_signs = (1,)

    def __init__(self, in_shape, matrices: list[tuple[int, torch.Tensor]]):
        self.in_shape = tuple(in_shape)
        self.matrices = [(int(axis), m.to(torch.float32)) for axis, m in matrices]

    @staticmethod
    def _along(t: torch.Tensor, dim: int, matrix: torch.Tensor) -> torch.Tensor:
        return torch.movedim(torch.movedim(t, dim, -1) @ matrix.T.to(t), -1, dim)

    def forward(self, x):
        for axis, matrix in self.matrices:
            x = self._along(x, axis + 1, matrix)
        return x

    def interval(self, bounds):
        return self.forward(bounds[0]), self.forward(bounds[1])

    def backward(self, A, ctx: BackwardContext):
        for axis, matrix in reversed(self.matrices):
            A = self._along(A, axis + 2, matrix.T)
        return [A], 0.0

    def to(self, device=None, dtype=None):
        self.matrices = [(axis, m.to(device=device, dtype=dtype)) for axis, m in self.matrices]
        return self

    def __repr__(self):
        return f"AxisInterpolate(axes={[a for a, _ in self.matrices]})"


def _text(ctx: NodeContext, key: str, default: str) -> str:
    value = ctx.attr(key, default)
    return value.decode() if isinstance(value, bytes) else value


@register("Resize", "Upsample")
def build_resize(ctx: NodeContext):
    x = ctx.var(0)
    mode = _text(ctx, "mode", "nearest")
    if mode in ("bilinear", "trilinear"):   # Upsample's names
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise BuildError(f"{ctx.op_type} mode {mode!r} (nearest and linear are supported)")
    if int(ctx.attr("antialias", 0)):
        raise BuildError(f"{ctx.op_type} with antialias")
    if ctx.op_type == "Upsample":
        scales = list(ctx.attr("scales")) if "scales" in ctx.attrs else ctx.const(1, float_=True).tolist()
        coord, nearest, sizes = "asymmetric", "floor", None
    else:
        coord = _text(ctx, "coordinate_transformation_mode", "half_pixel" if ctx.opset >= 11 else "asymmetric")
        nearest = _text(ctx, "nearest_mode", "round_prefer_floor")
        scale_index = 2 if ctx.opset >= 11 else 1
        sizes = ctx.const_ints(3) if ctx.opset >= 11 and ctx.has_input(3) and ctx.const(3).numel() else None
        scales = ctx.const(scale_index, float_=True).tolist() if sizes is None else None
    steps = []
    for axis, dim in enumerate(x.shape):
        out = sizes[axis] if sizes is not None else int(math.floor(dim * scales[axis]))
        scale = out / dim if sizes is not None else scales[axis]
        if out == dim and scale == 1.0:
            continue
        src = source_coordinates(out, dim, scale, coord)
        steps.append((axis, nearest_source(src, dim, nearest) if mode == "nearest" else linear_weights(src, dim)))
    if mode == "nearest":
        return ctx.emit(AxisSelect(x.shape, steps), [x], 0)
    return ctx.emit(AxisInterpolate(x.shape, steps), [x], 0)
