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

    # ---------------------------------------------------------------- backward
    def _windows(self, x: torch.Tensor, fill: float):
        """``(values, index, out)``: ``values (M, K, L)`` the ``K`` cells of each of
        the ``L`` windows for every flattened leading slice ``M``, ``index (K, L)``
        their positions in the padded plane, ``out`` the output spatial shape."""
        nd = self.spatial_dims
        if nd > 2:
            raise NotImplementedError("MaxPool backward: only 1-D and 2-D pooling")
        flat, out = self._padded(x, fill)
        padded_spatial = flat.shape[2:]
        if nd == 1:
            flat = flat.unsqueeze(-2)
        kernel = (1,) * (2 - nd) + self.kernel_shape
        stride = (1,) * (2 - nd) + self.strides
        dilation = (1,) * (2 - nd) + self.dilations
        positions = torch.arange(flat[0].numel(), device=x.device, dtype=torch.float64)
        positions = positions.reshape(1, *flat.shape[1:])
        index = F.unfold(positions, kernel, dilation=dilation, stride=stride)[0]  # (K, L_all)
        index = index.reshape(index.shape[0], *self._unfold_grid(padded_spatial))
        index = index[(slice(None),) + tuple(slice(0, o) for o in out)].reshape(index.shape[0], -1).long()
        values = flat.reshape(flat.shape[0], -1)[:, index]  # (M, K, L)
        return values, index, out, padded_spatial

    def _unfold_grid(self, padded_spatial):
        nd = self.spatial_dims
        return tuple((padded_spatial[i] - self.dilations[i] * (self.kernel_shape[i] - 1) - 1)
                     // self.strides[i] + 1 for i in range(nd))

    def backward(self, A: torch.Tensor, ctx):
        """Per window, below ``y >= x_m`` (``m``: largest box centre); above the
        chord of ``max(x_M, U)`` over ``x_M in [l_M, u_M]`` (``M``: largest upper
        bound, ``U``: the runner-up upper bound): ``y <= s x_M + U - s l_M`` with
        ``s = (u_M - U)/(u_M - l_M)``.  Exact (``y = x_M``) when ``l_M >= U``."""
        lower, upper = ctx.input_bounds[0]
        in_shape = tuple(ctx.input_shapes[0])
        nd = self.spatial_dims
        batch = lower.shape[0]
        low_w, index, out, padded_spatial = self._windows(lower, -math.inf)
        up_w, _, _, _ = self._windows(upper, -math.inf)
        centre = torch.where(torch.isfinite(low_w), (low_w + up_w) / 2, torch.full_like(low_w, -math.inf))
        pick_low = centre.argmax(1)                                   # (M, L)
        top2 = up_w.topk(min(2, up_w.shape[1]), dim=1)
        pick_up = top2.indices[:, 0]
        u_max = top2.values[:, 0]
        runner_up = top2.values[:, 1] if up_w.shape[1] > 1 else torch.full_like(u_max, -math.inf)
        l_at = low_w.gather(1, pick_up.unsqueeze(1)).squeeze(1)
        exact = l_at >= runner_up
        width = (u_max - l_at)
        safe_width = torch.where(width > 0, width, torch.ones_like(width))
        slope = torch.where(exact, torch.ones_like(width), ((u_max - runner_up) / safe_width).clamp(0, 1))
        up_bias = torch.where(exact, torch.zeros_like(width), runner_up - slope * l_at)
        eps = torch.finfo(lower.dtype).eps
        up_bias = up_bias + torch.where(exact, torch.zeros_like(width),
                                        8 * eps * (up_bias.abs() + u_max.abs() + l_at.abs()))
        # back to (B, S, M_per_sample, L)
        S = A.shape[1]
        per_sample = low_w.shape[0] // batch
        A_flat = A.reshape(A.shape[0], S, per_sample, -1)
        a_pos, a_neg = A_flat.clamp(min=0), A_flat.clamp(max=0)

        def per_domain(t):
            return t.reshape(batch, 1, per_sample, -1)

        pos_low = index[pick_low, torch.arange(index.shape[1], device=A.device)]  # (M, L) plane positions
        pos_up = index[pick_up, torch.arange(index.shape[1], device=A.device)]
        plane = 1
        for p in padded_spatial:
            plane *= p
        A_in = A.new_zeros(max(A.shape[0], batch), S, per_sample, plane)
        full = (A_in.shape[0], S, per_sample, pos_low.shape[1])
        A_in.scatter_add_(3, per_domain(pos_low).expand(full), a_pos.expand(full))
        A_in.scatter_add_(3, per_domain(pos_up).expand(full), (a_neg * per_domain(slope)).expand(full))
        bias = (a_neg * per_domain(up_bias)).flatten(2).sum(-1)
        # crop the padding away and restore the input shape
        A_in = A_in.reshape(A_in.shape[0], S, per_sample, *padded_spatial)
        in_spatial = in_shape[len(in_shape) - nd:]
        # windows never reached cells cut off at the end: give them zero coefficients
        regrow = []
        for i in reversed(range(nd)):
            regrow += [0, max(0, self.pads[i] + in_spatial[i] - padded_spatial[i])]
        if any(regrow):
            A_in = F.pad(A_in, regrow)
        crop = tuple(slice(self.pads[i], self.pads[i] + in_spatial[i]) for i in range(nd))
        A_in = A_in[(slice(None),) * 3 + crop]
        return [A_in.reshape(A_in.shape[0], S, *in_shape)], bias

    def __repr__(self) -> str:
        return (f"MaxPool(k={self.kernel_shape}, s={self.strides}, p={self.pads}, "
                f"d={self.dilations}, ceil={self.ceil_mode})")
