"""MaxPool: the maximum over each window (a nonlinear, non-element-wise op)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bounds.ops.base import Operator

_POOL_FNS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class MaxPool(Operator):
    """ONNX MaxPool on a per-sample tensor ``(N, C, *spatial)``.

    Padding follows ONNX: padded cells hold ``-inf`` (they never win), and
    ``ceil_mode`` rounds the number of windows up; windows that would lie
    entirely in the padding are dropped the way onnxruntime does.
    """

    op_type = "MaxPool"
    is_linear = False

    def __init__(self, kernel_shape, strides, pads, dilations=None, ceil_mode: bool = False):
        self.kernel_shape = tuple(int(k) for k in kernel_shape)
        nd = len(self.kernel_shape)
        self.strides = tuple(int(s) for s in (strides or (1,) * nd))
        self.pads = tuple(int(p) for p in (pads or (0,) * (2 * nd)))  # ONNX order: (begin..., end...)
        self.dilations = tuple(int(d) for d in (dilations or (1,) * nd))
        self.ceil_mode = bool(ceil_mode)

    # ---------------------------------------------------------------- geometry
    @property
    def spatial_dims(self) -> int:
        return len(self.kernel_shape)

    def output_spatial(self, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Number of windows per spatial axis (ONNX formula)."""
        nd = self.spatial_dims
        out = []
        for i in range(nd):
            span = self.dilations[i] * (self.kernel_shape[i] - 1) + 1
            total = in_spatial[i] + self.pads[i] + self.pads[i + nd] - span
            n = (math.ceil if self.ceil_mode else math.floor)(total / self.strides[i]) + 1
            # onnxruntime/PyTorch: a window must start inside input or begin padding
            if self.ceil_mode and (n - 1) * self.strides[i] >= in_spatial[i] + self.pads[i]:
                n -= 1
            out.append(n)
        return tuple(out)

    def _padded(self, x: torch.Tensor, fill: float) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Flatten leading axes to ``(M, 1, *spatial)`` and pad with ``fill`` so
        that a plain floor-mode pooling yields exactly the ONNX windows."""
        nd = self.spatial_dims
        spatial = tuple(x.shape[-nd:])
        out = self.output_spatial(spatial)
        pad_pairs: list[int] = []
        for i in reversed(range(nd)):  # F.pad lists the last axis first
            span = self.dilations[i] * (self.kernel_shape[i] - 1) + 1
            needed = (out[i] - 1) * self.strides[i] + span
            end = needed - spatial[i] - self.pads[i]
            pad_pairs += [self.pads[i], end]
        flat = x.reshape(-1, 1, *spatial)
        if any(pad_pairs):
            flat = F.pad(flat, pad_pairs, value=fill)
        return flat, out

    def _pool(self, x: torch.Tensor, fill: float = -math.inf) -> torch.Tensor:
        nd = self.spatial_dims
        flat, out = self._padded(x, fill)
        pooled = _POOL_FNS[nd](flat, self.kernel_shape, self.strides, 0, self.dilations)
        # floor mode may give extra windows when we padded past the need (negative end)
        pooled = pooled[(...,) + tuple(slice(0, o) for o in out)]
        return pooled.reshape(*x.shape[:-nd], *out)

    # ------------------------------------------------------------------ values
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x)

    def interval(self, bounds):
        """Max is monotone in every input."""
        lower, upper = bounds
        return self._pool(lower), self._pool(upper)

    def __repr__(self) -> str:
        return (f"MaxPool(k={self.kernel_shape}, s={self.strides}, p={self.pads}, "
                f"d={self.dilations}, ceil={self.ceil_mode})")
