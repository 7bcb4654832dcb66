"""More ONNX element-wise activations: Atan, Softsign, Softplus, Elu/Selu, HardSwish.

All derive from :class:`~bounds.ops.relax_utils.CurvedElementwise` (see
``activations.py``): a class states ``f``, ``f'`` and where ``f`` is
convex/concave; soundness comes from the exact gap analysis for any slope.
Kinks (Elu/Selu at 0, HardSwish at -3 and 3) are curvature breakpoints, at
which the gap is evaluated directly, so a drop of the slope at a kink (a
locally concave corner inside an otherwise convex function) is handled too.
``derivative_root`` gives the point where ``f' = k`` in closed form so the
gap analysis skips its bisection (its bracket is checked, never trusted).
"""
from __future__ import annotations

import math

import torch

from bounds.ops.activations import _SShaped
from bounds.ops.relax_utils import CurvedElementwise, Curvature

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


class Atan(_SShaped):
    """``atan(x)``: ``f' = 1 / (1 + x^2)``, convex for ``x < 0``, concave for ``x > 0``."""

    op_type = "Atan"

    def forward(self, x):
        return torch.atan(x)

    def derivative(self, x):
        return torch.reciprocal(1 + x * x)

    def positive_root(self, k):
        # 1 / (1 + x^2) = k  <=>  x = sqrt(1/k - 1)
        return torch.sqrt((torch.reciprocal(k) - 1).clamp(min=0))


class Softsign(_SShaped):
    """``x / (1 + |x|)``: ``f' = 1 / (1 + |x|)^2``, convex left of 0, concave right."""

    op_type = "Softsign"

    def forward(self, x):
        return x / (1 + x.abs())

    def derivative(self, x):
        return (1 + x.abs()).pow(-2)

    def positive_root(self, k):
        return (torch.rsqrt(k) - 1).clamp(min=0)


class Softplus(CurvedElementwise):
    """``log(1 + e^x)``: convex and increasing, ``f' = sigmoid(x)``.

    Computed as ``logaddexp(x, 0)`` (no overflow for large ``x``, full
    relative precision for very negative ``x``) -- not torch's thresholded
    softplus, which returns ``x`` beyond a threshold.
    """

    op_type = "Softplus"
    curvature = Curvature((), (1,))
    monotone_increasing = True

    def forward(self, x):
        return torch.logaddexp(x, torch.zeros_like(x))

    def derivative(self, x):
        return torch.sigmoid(x)

    def derivative_root(self, slope, lo_edge, hi_edge):
        # sigmoid(x) = k  <=>  x = logit(k); k <= 0 -> -inf, k >= 1 -> +inf (piece ends)
        return torch.logit(slope.clamp(0.0, 1.0))


class Elu(CurvedElementwise):
    """``scale * x`` for ``x > 0``, ``scale * alpha * (e^x - 1)`` for ``x <= 0``.

    ONNX Elu is ``scale = 1``; ONNX Selu is ``alpha = 1.6733, scale = gamma =
    1.0507`` (``op_type`` follows).  The left piece is convex for
    ``scale * alpha > 0`` (concave below 0, linear at 0), the right piece
    linear; 0 is a breakpoint because the slope jumps from ``scale * alpha``
    to ``scale`` there (a drop when ``alpha > 1``: a concave corner).
    """

    def __init__(self, alpha: float = 1.0, scale: float = 1.0):
        self.alpha = float(alpha)
        self.scale = float(scale)
        self.op_type = "Elu" if self.scale == 1.0 else "Selu"
        left = self.alpha * self.scale
        self.curvature = Curvature((0.0,), (int(math.copysign(1, left)) if left != 0 else 0, 0))
        self.monotone_increasing = self.scale >= 0 and left >= 0

    def forward(self, x):
        # the formula (not torch's elu) so that any scale matches onnxruntime
        left = (self.scale * self.alpha) * torch.expm1(x.clamp(max=0))
        return torch.where(x > 0, self.scale * x, left)

    def derivative(self, x):
        left = (self.scale * self.alpha) * torch.exp(x.clamp(max=0))
        return torch.where(x > 0, torch.full_like(x, self.scale), left)

    def derivative_root(self, slope, lo_edge, hi_edge):
        """On the left piece ``scale alpha e^x = k``: ``x = log(k / (scale alpha))``;
        a ratio <= 0 means ``f' - k`` never changes sign and the extreme sits at
        the far left (``-inf``), a ratio > 1 puts it at 0 (after clamping)."""
        if hi_edge > 0:  # the linear right piece is never searched
            return None
        ratio = slope / (self.scale * self.alpha)
        safe = torch.where(ratio > 0, ratio, torch.ones_like(ratio))
        return torch.where(ratio > 0, torch.log(safe), torch.full_like(ratio, -math.inf))

    def __repr__(self):
        return f"Elu(alpha={self.alpha}, scale={self.scale})"


class HardSwish(CurvedElementwise):
    """ONNX HardSwish ``x * max(0, min(1, x/6 + 1/2))``: 0 for ``x <= -3``,
    ``x (x + 3) / 6`` on ``[-3, 3]`` (convex, minimum -3/8 at -3/2), ``x`` for
    ``x >= 3``.  The slope jumps at both breakpoints (0 -> -1/2 at -3,
    3/2 -> 1 at 3)."""

    op_type = "HardSwish"
    curvature = Curvature((-3.0, 3.0), (0, 1, 0))

    def forward(self, x):
        return x * torch.clamp(x / 6 + 0.5, 0.0, 1.0)

    def derivative(self, x):
        middle = (2 * x + 3) / 6
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), middle))

    def derivative_root(self, slope, lo_edge, hi_edge):
        # only the convex middle piece is searched: (2x + 3) / 6 = k
        return 3 * slope - 1.5
