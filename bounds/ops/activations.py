"""Element-wise nonlinear activations other than ReLU.

Smooth and piecewise-linear functions derive from
:class:`~bounds.ops.relax_utils.CurvedElementwise`: a class states ``f``, its
derivative and where it is convex/concave; soundness then comes from the exact
gap analysis in ``relax_utils`` for any slope, and the default slopes are the
classic chord/tangent choices (picked per side by the midpoint rule).
alpha-CROWN parameters: ``lower_t``, ``upper_t`` in ``[0, 1]`` (slope between
min and max of ``f'`` on the interval).

Sin/Cos replace the curvature analysis by the periodic one in
``periodic.py``; Sign/Floor are step functions with hand-made bounds.
"""
from __future__ import annotations

import math

import torch

from bounds.ops.base import ElementwiseNonlinear, LinearRelaxation
from bounds.ops.periodic import PeriodicElementwise
from bounds.ops.relax_utils import (CurvedElementwise, Curvature, infinity_safe_backward,
                                    line_through_tangent)

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

S_SHAPE = Curvature((0.0,), (1, -1))  # convex for x < 0, concave for x > 0


class _SShaped(CurvedElementwise):
    """Increasing, convex left of 0 and concave right of 0 (sigmoid, tanh, erf).

    Extra default slopes: the classic lines tangent to ``f`` that pass through
    the far endpoint, ``(l, f(l))`` for the upper bound and ``(u, f(u))`` for
    the lower one (they are optimal when the interval crosses 0).
    """

    curvature = S_SHAPE
    monotone_increasing = True

    def extra_candidates(self, lower, upper):
        zero = torch.zeros_like(lower)
        d_up = line_through_tangent(self.value, self.derivative, lower,
                                    torch.maximum(lower, zero), upper)
        # for the lower line, tangent points on the convex side, searched on -f(-x)
        mirrored = line_through_tangent(lambda x: -self.value(-x), lambda x: self.derivative(-x),
                                        -upper, torch.maximum(-upper, zero), -lower)
        return [self.derivative(-mirrored)], [self.derivative(d_up)]

    def positive_root(self, k: torch.Tensor) -> torch.Tensor:
        """``x >= 0`` with ``f'(x) = k`` for ``0 < k < f'(0)`` (``None``: no closed form)."""
        return None

    def derivative_root(self, slope, lo_edge, hi_edge):
        """``f'`` is even and decreasing on ``x >= 0``: on the right piece the
        root is ``positive_root``, on the left its mirror; a slope above
        ``f'(0)`` puts the maximizer at 0, one <= 0 at the far end."""
        peak = float(self.derivative(torch.zeros((), dtype=torch.float64)))
        k = slope.clamp(min=1e-300, max=peak)
        root = self.positive_root(k)
        if root is None:
            return None
        root = torch.where(slope >= peak, torch.zeros_like(root), root)
        root = torch.where(slope <= 0, torch.full_like(root, math.inf), root)
        return root if lo_edge >= 0 else -root


class Sigmoid(_SShaped):
    op_type = "Sigmoid"

    def forward(self, x):
        return torch.sigmoid(x)

    def positive_root(self, k):
        # sigma(-x) = s solves s (1 - s) = k; 2k / (1 + sqrt(1 - 4k)) avoids cancellation
        small = 2 * k / (1 + torch.sqrt((1 - 4 * k).clamp(min=0)))
        return torch.log1p(-small) - torch.log(small)

    def derivative(self, x):
        # sigma(x) sigma(-x) keeps relative precision in both tails
        return torch.sigmoid(x) * torch.sigmoid(-x)


class Tanh(_SShaped):
    op_type = "Tanh"

    def forward(self, x):
        return torch.tanh(x)

    def positive_root(self, k):
        return torch.acosh(torch.rsqrt(k).clamp(min=1))

    def derivative(self, x):
        return torch.cosh(x).pow(-2)


class Erf(_SShaped):
    op_type = "Erf"

    def forward(self, x):
        return torch.erf(x)

    def derivative(self, x):
        return _TWO_OVER_SQRT_PI * torch.exp(-x * x)

    def positive_root(self, k):
        return torch.sqrt(torch.log(_TWO_OVER_SQRT_PI / k).clamp(min=0))


class Exp(CurvedElementwise):
    """Convex: chord above, tangent (at the midpoint by default) below."""

    op_type = "Exp"
    curvature = Curvature((), (1,))
    monotone_increasing = True

    def forward(self, x):
        return torch.exp(x)

    def derivative(self, x):
        return torch.exp(x)


class Log(CurvedElementwise):
    """Concave on ``x > 0``; intervals reaching ``x <= 0`` get infinite bounds."""

    op_type = "Log"
    curvature = Curvature((), (-1,))
    monotone_increasing = True

    def forward(self, x):
        return torch.log(x)

    def derivative(self, x):
        return torch.reciprocal(x)

    def domain(self, lower, upper):
        return lower, upper, lower <= 0


class Sqrt(CurvedElementwise):
    """Concave on ``x >= 0``.  Inputs below 0 have no real value (ONNX gives
    NaN), so the lower bound is clipped to 0; an interval entirely below 0
    gets infinite bounds."""

    op_type = "Sqrt"
    curvature = Curvature((), (-1,))
    monotone_increasing = True

    def forward(self, x):
        return torch.sqrt(x)

    def derivative(self, x):
        return 0.5 * torch.rsqrt(x)

    def domain(self, lower, upper):
        return lower.clamp(min=0), upper, upper < 0


class Reciprocal(CurvedElementwise):
    """``1/x``: convex decreasing for ``x > 0``, concave for ``x < 0``;
    intervals containing 0 get infinite bounds."""

    op_type = "Reciprocal"
    curvature = Curvature((0.0,), (-1, 1))

    def forward(self, x):
        return torch.reciprocal(x)

    def derivative(self, x):
        return -torch.reciprocal(x * x)

    def domain(self, lower, upper):
        return lower, upper, (lower <= 0) & (upper >= 0)

    def _interval_work(self, lower, upper, invalid):
        lo = torch.where(invalid, torch.full_like(lower, -math.inf), 1 / upper)
        hi = torch.where(invalid, torch.full_like(lower, math.inf), 1 / lower)
        return lo, hi


class GELU(CurvedElementwise):
    """``x Phi(x)`` (exact, erf-based).  ``GELU'' = phi(x) (2 - x^2)``: concave,
    convex on ``[-sqrt 2, sqrt 2]``, concave; minimum near ``x = -0.7518``."""

    op_type = "Gelu"
    curvature = Curvature((-_SQRT2, _SQRT2), (-1, 1, -1))

    def forward(self, x):
        return torch.nn.functional.gelu(x)

    def value(self, x):
        return 0.5 * x * (1 + torch.erf(x / _SQRT2))

    def derivative(self, x):
        return 0.5 * (1 + torch.erf(x / _SQRT2)) + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x)


class Pow(CurvedElementwise):
    """``x ** exponent`` for a constant scalar exponent.

    Integer exponents are defined on all reals (negative ones exclude 0);
    fractional exponents on ``x >= 0`` (``x > 0`` when negative), with the
    lower bound clipped to the domain as for Sqrt.
    """

    op_type = "Pow"

    def __init__(self, exponent: float):
        self.exponent = float(exponent)
        p = self.exponent
        self.is_integer = p == round(p)
        if p in (0.0, 1.0):
            self.curvature = Curvature((), (0,))
        elif self.is_integer and p > 0:
            even = int(p) % 2 == 0
            self.curvature = Curvature((), (1,)) if even else Curvature((0.0,), (-1, 1))
        elif self.is_integer:  # negative integer: pole at 0
            even = int(-p) % 2 == 0
            self.curvature = Curvature((0.0,), (1, 1)) if even else Curvature((0.0,), (-1, 1))
        else:  # fractional: only x >= 0
            self.curvature = Curvature((), (-1,) if 0 < p < 1 else (1,))
        self.monotone_increasing = (p > 0 and not self.is_integer) or (self.is_integer and p > 0 and int(p) % 2 == 1)

    def forward(self, x):
        return torch.pow(x, self.exponent)

    def derivative(self, x):
        p = self.exponent
        if p == 0.0:
            return torch.zeros_like(x)
        return p * torch.pow(x, p - 1)

    def domain(self, lower, upper):
        p = self.exponent
        if self.is_integer and p >= 0:
            return lower, upper, torch.zeros_like(lower, dtype=torch.bool)
        if self.is_integer:
            return lower, upper, (lower <= 0) & (upper >= 0)
        if p > 0:
            return lower.clamp(min=0), upper, upper < 0
        return lower, upper, lower <= 0

    def __repr__(self):
        return f"Pow({self.exponent})"


class LeakyReLU(CurvedElementwise):
    """Piecewise linear with a kink at 0.  With ``negative_slope <= 1`` the
    default is CROWN's: chord above and, below, the slope among {a, 1} (or the
    chord) closest at the midpoint; ``lower_t`` is then the usual alpha."""

    op_type = "LeakyRelu"

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = float(negative_slope)
        self.curvature = Curvature((0.0,), (0, 0))
        self.monotone_increasing = self.negative_slope >= 0

    def forward(self, x):
        return torch.nn.functional.leaky_relu(x, self.negative_slope)

    def value(self, x):
        return torch.where(x >= 0, x, x * self.negative_slope)

    def derivative(self, x):
        return torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))


class Clip(CurvedElementwise):
    """``min(max(x, min_value), max_value)``: linear pieces with kinks at the
    clip values; exact gaps come from the ends and the kinks."""

    op_type = "Clip"
    monotone_increasing = True

    def __init__(self, min_value: float | None = None, max_value: float | None = None):
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)
        kinks = tuple(v for v in (self.min_value, self.max_value) if v is not None)
        self.curvature = Curvature(tuple(sorted(kinks)), (0,) * (len(kinks) + 1))

    def forward(self, x):
        return torch.clamp(x, self.min_value, self.max_value)

    def derivative(self, x):
        inside = torch.ones_like(x, dtype=torch.bool)
        if self.min_value is not None:
            inside &= x >= self.min_value
        if self.max_value is not None:
            inside &= x <= self.max_value
        return inside.to(x.dtype)

    def __repr__(self):
        return f"Clip({self.min_value}, {self.max_value})"


class Sin(PeriodicElementwise):
    op_type = "Sin"
    kind = "sin"

    def forward(self, x):
        return torch.sin(x)

    def derivative(self, x):
        return torch.cos(x)


class Cos(PeriodicElementwise):
    op_type = "Cos"
    kind = "cos"

    def forward(self, x):
        return torch.cos(x)

    def derivative(self, x):
        return -torch.sin(x)


class _StepFunction(ElementwiseNonlinear):
    """Shared backward (infinite-safe) for step functions."""

    def backward(self, A, ctx):
        lower, upper = ctx.input_bounds[0]
        return infinity_safe_backward(A, self.relax(lower.unsqueeze(1), upper.unsqueeze(1), ctx.params))


class Sign(_StepFunction):
    """ONNX Sign: -1, 0 or 1.

    On ``l <= 0 <= u``: above, the line ``2x/(-l) + 1`` (through ``(l, -1)``
    and ``(0, 1)``) when the interval is mostly negative, else the constant 1;
    below, mirrored: ``2x/u - 1`` or the constant -1.
    """

    op_type = "Sign"

    def forward(self, x):
        return torch.sign(x)

    def interval(self, bounds):
        lower, upper = bounds
        return torch.sign(lower), torch.sign(upper)

    def relax(self, lower, upper, params=None) -> LinearRelaxation:
        lower, upper = torch.broadcast_tensors(lower, upper)
        zero = torch.zeros_like(lower)
        one = torch.ones_like(lower)
        mid = (lower + upper) / 2
        use_up_line = (lower < 0) & (upper >= 0) & (mid < 0)
        use_low_line = (upper > 0) & (lower <= 0) & (mid > 0)
        up_slope = torch.where(use_up_line, 2 / torch.where(use_up_line, -lower, one), zero)
        low_slope = torch.where(use_low_line, 2 / torch.where(use_low_line, upper, one), zero)
        up_bias = torch.where(use_up_line, one, torch.sign(upper))
        low_bias = torch.where(use_low_line, -one, torch.sign(lower))
        eps = 4 * torch.finfo(lower.dtype).eps
        # the line passes exactly through (l, -1): keep a rounding margin
        up_bias = up_bias + torch.where(use_up_line, 2 * eps * one, zero)
        low_bias = low_bias - torch.where(use_low_line, 2 * eps * one, zero)
        return LinearRelaxation(low_slope, low_bias, up_slope, up_bias)


class Floor(_StepFunction):
    """``x - 1 < floor(x) <= x``; constant bounds when they are tighter at the
    midpoint (exact when ``floor(l) == floor(u)``)."""

    op_type = "Floor"

    def forward(self, x):
        return torch.floor(x)

    def interval(self, bounds):
        lower, upper = bounds
        return torch.floor(lower), torch.floor(upper)

    def relax(self, lower, upper, params=None) -> LinearRelaxation:
        lower, upper = torch.broadcast_tensors(lower, upper)
        floor_l, floor_u = torch.floor(lower), torch.floor(upper)
        mid = (lower + upper) / 2
        zero = torch.zeros_like(lower)
        one = torch.ones_like(lower)
        up_const = floor_u <= mid
        low_const = floor_l >= mid - 1
        # identity-slope bias: relative margin for the rounding of x + b
        reach = torch.maximum(lower.abs(), upper.abs())
        eps = 4 * torch.finfo(lower.dtype).eps * (reach + 1)
        up_slope = torch.where(up_const, zero, one)
        up_bias = torch.where(up_const, floor_u, eps)
        low_slope = torch.where(low_const, zero, one)
        low_bias = torch.where(low_const, floor_l, -one - eps)
        return LinearRelaxation(low_slope, low_bias, up_slope, up_bias)
