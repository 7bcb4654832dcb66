"""Shared machinery for sound linear relaxations of scalar functions.

Principle (used by every smooth or piecewise-linear activation here): for ANY
slope ``k`` the lines

    k x + min_{[l,u]} (f(x) - k x)   <=   f(x)   <=   k x + max_{[l,u]} (f(x) - k x)

enclose ``f`` on ``[l, u]``.  So soundness only needs a rigorous bound on the
extremes of the *gap* ``h(x) = f(x) - k x``; the slope is a free choice (a
default heuristic, or an alpha-CROWN parameter).  Tangent lines, chords and
the classic S-shape "tangent through an endpoint" lines are all special cases
of this with the matching slope, and the computed bias is then exact.

The extremes are found from a description of ``f``'s curvature: sorted
breakpoints splitting the real line into pieces that are convex (+1), concave
(-1) or linear (0).  On a concave piece ``h`` is concave, so its maximum is at
the root of ``h' = f' - k``, bracketed by bisection; the returned value is the
rigorous tangent bound ``h(lo) + max(h'(lo), 0) (hi - lo)`` over the final
bracket ``[lo, hi]``, so a few bisection steps only loosen, never break it.
Everything else (piece ends, breakpoints, the ends of convex pieces) is
evaluated directly.  Minima use the mirror argument.

Computation runs in float64 (unless the device lacks it) and the bias gets a
relative safety margin for rounding in the caller's dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from bounds.ops.base import ElementwiseNonlinear, LinearRelaxation, sum_tail

Fn = Callable[[torch.Tensor], torch.Tensor]

BISECTION_STEPS = 30
MARGIN_ULPS = 8.0


@dataclass(frozen=True)
class Curvature:
    """``signs[i]`` is the curvature of ``f`` between ``breakpoints[i-1]`` and
    ``breakpoints[i]`` (+1 convex, -1 concave, 0 linear)."""

    breakpoints: tuple[float, ...]
    signs: tuple[int, ...]

    def __post_init__(self) -> None:
        assert len(self.signs) == len(self.breakpoints) + 1
        assert list(self.breakpoints) == sorted(self.breakpoints)

    def pieces(self):
        edges = (-math.inf,) + self.breakpoints + (math.inf,)
        for i, sign in enumerate(self.signs):
            yield edges[i], edges[i + 1], sign


def work_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for the internal analysis where the device supports it."""
    return t.dtype if t.device.type == "mps" else torch.float64


def safety_margin(bias: torch.Tensor, slope: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  value_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A few ulps (of the caller's dtype) of every magnitude that enters ``k x + b``."""
    eps = torch.finfo(dtype).eps
    reach = torch.maximum(lower.abs(), upper.abs())
    parts = (bias.abs(), slope.abs() * reach, value_scale.abs())
    # an infinite part (overflowed f at a far end) must not wipe out the others
    scale = sum(torch.nan_to_num(p, nan=0.0, posinf=0.0) for p in parts)
    return MARGIN_ULPS * eps * scale + torch.finfo(dtype).tiny


def concave_max(gap: Fn, gap_deriv: Fn, a: torch.Tensor, b: torch.Tensor,
                steps: int = BISECTION_STEPS) -> torch.Tensor:
    """Rigorous upper bound of ``max_{[a,b]} gap`` for a concave ``gap``.

    The bracket search runs without autograd; the final value is
    differentiable with respect to whatever ``gap`` closes over (the slope),
    which gives the envelope-theorem gradient ``-x*`` for alpha-CROWN.
    """
    with torch.no_grad():
        lo, hi = a.clone(), b.clone()
        for _ in range(steps):
            mid = (lo + hi) / 2
            rising = gap_deriv(mid) > 0
            lo = torch.where(rising, mid, lo)
            hi = torch.where(rising, hi, mid)
    width = hi - lo
    has_width = width > 0
    zero = torch.zeros_like(width)
    # an infinite derivative (sqrt at 0) times a zero width must read as 0
    from_lo = gap(lo) + torch.where(has_width, gap_deriv(lo).clamp(min=0) * width, zero)
    from_hi = gap(hi) + torch.where(has_width, (-gap_deriv(hi)).clamp(min=0) * width, zero)
    return torch.minimum(from_lo, from_hi)


def bracketed_concave_max(gap: Fn, gap_deriv: Fn, a: torch.Tensor, b: torch.Tensor,
                          guess: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_{[a,b]} gap`` (concave) from a closed-form guess of the maximizer.

    The bracket ``[lo, hi]`` is a few ulps around ``guess`` (clamped to
    ``[a, b]``); it holds the maximizer when ``gap' >= 0`` at ``lo`` (or
    ``lo = a``) and ``gap' <= 0`` at ``hi`` (or ``hi = b``), checked here --
    the same sign tests the bisection relies on.  Returns ``(value, valid)``;
    ``value`` is the bound of :func:`concave_max` on that bracket.
    """
    with torch.no_grad():
        guess = torch.nan_to_num(guess, nan=0.0).clamp(min=a, max=b)
        delta = 1e-9 * (1 + guess.abs())
        lo = torch.maximum(guess - delta, a)
        hi = torch.minimum(guess + delta, b)
        valid = ((lo <= a) | (gap_deriv(lo) >= 0)) & ((hi >= b) | (gap_deriv(hi) <= 0))
    width = hi - lo
    has_width = width > 0
    zero = torch.zeros_like(width)
    from_lo = gap(lo) + torch.where(has_width, gap_deriv(lo).clamp(min=0) * width, zero)
    from_hi = gap(hi) + torch.where(has_width, (-gap_deriv(hi)).clamp(min=0) * width, zero)
    return torch.minimum(from_lo, from_hi), valid


def gap_extreme(f: Fn, df: Fn, curvature: Curvature, slope: torch.Tensor,
                lower: torch.Tensor, upper: torch.Tensor, maximize: bool,
                derivative_root: Callable | None = None) -> torch.Tensor:
    """Rigorous ``max`` (or ``min``) of ``f(x) - slope * x`` over ``[lower, upper]``.

    ``derivative_root(slope, lo_edge, hi_edge)``, when the operator has one,
    gives in closed form the point of the curvature piece where ``f' = slope``
    (or the piece's end the maximizer sits at when there is none); it replaces
    the bisection wherever its bracket checks out (GenBaB/alpha-CROWN
    recompute relaxations every pass, and the bisection dominated their time).
    """
    sign = 1.0 if maximize else -1.0

    def gap(x):  # oriented so that we always maximize
        return sign * (f(x) - slope * x)

    def gap_deriv(x):
        return sign * (df(x) - slope)

    best = torch.maximum(gap(lower), gap(upper))
    for bp in curvature.breakpoints:
        inside = (lower < bp) & (upper > bp)
        at_bp = gap(torch.full_like(lower, bp))
        best = torch.where(inside, torch.maximum(best, at_bp), best)
    # pieces where the oriented gap is concave need an interior search
    wanted = -1 if maximize else 1
    for lo_edge, hi_edge, curv in curvature.pieces():
        if curv != wanted:
            continue
        a = lower.clamp(min=lo_edge, max=hi_edge)
        b = upper.clamp(min=lo_edge, max=hi_edge)
        present = (upper > lo_edge) & (lower < hi_edge)
        if not bool(present.any()):
            continue
        peak = None
        guess = None if derivative_root is None else derivative_root(slope, lo_edge, hi_edge)
        if guess is not None:
            peak, valid = bracketed_concave_max(gap, gap_deriv, a, b, guess)
            if not bool((valid | ~present).all()):
                peak = torch.where(valid, peak, concave_max(gap, gap_deriv, a, b))
        if peak is None:
            peak = concave_max(gap, gap_deriv, a, b)
        best = torch.where(present, torch.maximum(best, peak), best)
    return sign * best


def line_through_tangent(f: Fn, df: Fn, anchor: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                         steps: int = 30) -> torch.Tensor:
    """Tangent point ``d`` in ``[a, b]`` whose tangent passes through ``(anchor, f(anchor))``.

    ``residual(d) = f(d) + f'(d)(anchor - d) - f(anchor)`` must be monotone on
    ``[a, b]`` with ``residual(a) <= 0``; returns the bracket end on the
    ``residual >= 0`` side (or ``b`` when there is no root).  Used only to
    pick good slopes, so accuracy matters for tightness, not soundness.
    """
    f_anchor = f(anchor)

    def residual(d):
        return f(d) + df(d) * (anchor - d) - f_anchor

    lo, hi = a.clone(), b.clone()
    for _ in range(steps):
        mid = (lo + hi) / 2
        neg = residual(mid) < 0
        lo = torch.where(neg, mid, lo)
        hi = torch.where(neg, hi, mid)
    return hi


def secant_slope(f: Fn, df: Fn, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    width = upper - lower
    narrow = width <= 1e-9 * (1 + lower.abs())
    safe_width = torch.where(narrow, torch.ones_like(width), width)
    chord = (f(upper) - f(lower)) / safe_width
    return torch.where(narrow, df((lower + upper) / 2), chord)


def finite_or(x: torch.Tensor, fallback: float) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.full_like(x, fallback))


class CurvedElementwise(ElementwiseNonlinear):
    """Element-wise ``f`` relaxed by the slope-plus-exact-gap principle.

    Subclasses provide ``f`` (in ``forward``), ``derivative``, ``curvature``
    and optionally ``domain`` handling and extra slope candidates.

    alpha-CROWN parameters ``lower_t`` / ``upper_t`` in ``[0, 1]`` interpolate
    the slope between the smallest and largest derivative of ``f`` on
    ``[l, u]``; every value gives a sound relaxation.
    """

    curvature: Curvature = Curvature((), (0,))
    monotone_increasing: bool = False
    #: optional ``(slope, lo_edge, hi_edge) -> x``: closed-form point of a
    #: curvature piece where ``f' = slope`` (see :func:`gap_extreme`)
    derivative_root: Callable | None = None

    # ----------------------------------------------------------- to override
    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``f`` in the work dtype (``forward`` by default)."""
        return self.forward(x)

    def domain(self, lower: torch.Tensor, upper: torch.Tensor):
        """Return ``(lower, upper, invalid)``: bounds clipped to the domain and a
        mask of intervals on which no finite linear bound exists."""
        return lower, upper, torch.zeros_like(lower, dtype=torch.bool)

    def extra_candidates(self, lower, upper) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Additional default slopes (lower list, upper list)."""
        return [], []

    # ------------------------------------------------------------- machinery
    def gap_bound(self, slope, lower, upper, maximize: bool) -> torch.Tensor:
        return gap_extreme(self.value, self.derivative, self.curvature, slope, lower, upper, maximize,
                           self.derivative_root)

    def slope_range(self, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
        """Smallest and largest ``f'`` on ``[l, u]`` (at ends or breakpoints)."""
        d_l, d_u = self.derivative(lower), self.derivative(upper)
        lo, hi = torch.minimum(d_l, d_u), torch.maximum(d_l, d_u)
        for bp in self.curvature.breakpoints:
            inside = (lower < bp) & (upper > bp)
            d_bp = self.derivative(torch.full_like(lower, bp))
            lo = torch.where(inside, torch.minimum(lo, d_bp), lo)
            hi = torch.where(inside, torch.maximum(hi, d_bp), hi)
        big = 1e12
        return lo.clamp(-big, big), hi.clamp(-big, big)

    def _prepare(self, lower, upper):
        wd = work_dtype(lower)
        lower, upper = torch.broadcast_tensors(lower.to(wd), upper.to(wd))
        lower, upper, invalid = self.domain(lower, upper)
        # harmless stand-ins where no bound exists; overwritten at the end
        lower = torch.where(invalid, torch.ones_like(lower), lower)
        upper = torch.where(invalid, torch.full_like(upper, 2.0), upper)
        return lower, upper, invalid

    def default_slopes(self, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
        return self._default_lines(lower, upper)[0]

    def _default_lines(self, lower, upper, out_dtype: torch.dtype | None = None):
        """Pick, per side, the candidate slope whose line is closest to ``f`` at
        the midpoint (the line minimizing the enclosed area among candidates:
        the chord and the midpoint tangent, optimal for convex/concave pieces,
        plus the subclass's extra ones).  Returns ``(slopes, biases)`` pairs
        ordered (lower, upper); the biases are rigorous for the chosen slopes."""
        mid = (lower + upper) / 2
        base = [secant_slope(self.value, self.derivative, lower, upper), self.derivative(mid)]
        extra_low, extra_up = self.extra_candidates(lower, upper)
        slopes, biases = [], []
        for extra, maximize in ((extra_low, False), (extra_up, True)):
            cands = torch.stack([finite_or(c, 0.0) for c in base + extra])
            if out_dtype is not None:  # slopes exactly as the caller will store them
                cands = cands.to(out_dtype).to(lower.dtype)
            with torch.no_grad():
                bias = self.gap_bound(cands, lower.unsqueeze(0), upper.unsqueeze(0), maximize)
                at_mid = cands * mid + bias
                at_mid = torch.where(torch.isfinite(at_mid), at_mid,
                                     torch.full_like(at_mid, math.inf if maximize else -math.inf))
                pick = (at_mid.argmin(0) if maximize else at_mid.argmax(0)).unsqueeze(0)
            slopes.append(cands.gather(0, pick).squeeze(0))
            biases.append(bias.gather(0, pick).squeeze(0))
        return (slopes[0], slopes[1]), (biases[0], biases[1])

    def _slopes(self, lower, upper, params):
        if params is not None and "lower_t" in params:
            s_lo, s_hi = self.slope_range(lower, upper)
            t_low = params["lower_t"].to(lower.dtype).clamp(0, 1)
            t_up = params["upper_t"].to(lower.dtype).clamp(0, 1)
            return s_lo + t_low * (s_hi - s_lo), s_lo + t_up * (s_hi - s_lo)
        return self.default_slopes(lower, upper)

    def relax(self, lower, upper, params=None) -> LinearRelaxation:
        out_dtype = lower.dtype
        lower, upper, invalid = self._prepare(lower, upper)
        if params is not None and "lower_t" in params:
            k_low, k_up = self._slopes(lower, upper, params)
            known = None
        else:
            (k_low, k_up), known = self._default_lines(lower, upper, out_dtype)
        # round slopes to the caller's dtype first so the biases fit the slopes used
        k_low_r = finite_or(k_low, 0.0).to(out_dtype).to(lower.dtype)
        k_up_r = finite_or(k_up, 0.0).to(out_dtype).to(lower.dtype)
        if known is not None:
            b_low, b_up = known  # already rigorous for exactly these slopes
            k_low, k_up = k_low_r, k_up_r
            lower, upper, k_low, k_up, b_low, b_up = torch.broadcast_tensors(lower, upper, k_low, k_up, b_low, b_up)
        else:
            k_low, k_up = k_low_r, k_up_r
            lower, upper, k_low, k_up = torch.broadcast_tensors(lower, upper, k_low, k_up)
            b_low = self.gap_bound(k_low, lower, upper, maximize=False)
            b_up = self.gap_bound(k_up, lower, upper, maximize=True)
        with torch.no_grad():
            scale = torch.maximum(self.value(lower).abs(), self.value(upper).abs())
            m_low = safety_margin(b_low, k_low, lower, upper, scale, out_dtype)
            m_up = safety_margin(b_up, k_up, lower, upper, scale, out_dtype)
        b_low, b_up = b_low - m_low, b_up + m_up
        k_low, b_low, k_up, b_up = (t.to(out_dtype) for t in (k_low, b_low, k_up, b_up))
        # overflow (exp of large inputs) or no bound at all: fall back to constants
        with torch.no_grad():
            const_low, const_up = round_outward(*self._interval_work(lower, upper, invalid), out_dtype)
            broken_low = invalid | ~torch.isfinite(k_low) | ~torch.isfinite(b_low)
            broken_up = invalid | ~torch.isfinite(k_up) | ~torch.isfinite(b_up)
            const_low = torch.where(invalid | torch.isnan(const_low), torch.full_like(const_low, -math.inf), const_low)
            const_low = const_low.clamp(max=torch.finfo(out_dtype).max)  # overflowed values are still finite
            const_up = torch.where(invalid | torch.isnan(const_up), torch.full_like(const_up, math.inf), const_up)
        zero = torch.zeros_like(k_low)
        k_low = torch.where(broken_low, zero, k_low)
        k_up = torch.where(broken_up, zero, k_up)
        b_low = torch.where(broken_low, const_low, b_low)
        b_up = torch.where(broken_up, const_up, b_up)
        return LinearRelaxation(k_low, b_low, k_up, b_up)

    def interval(self, bounds):
        lower, upper = bounds
        out_dtype = lower.dtype
        lower, upper, invalid = self._prepare(lower, upper)
        return round_outward(*self._interval_work(lower, upper, invalid), out_dtype)

    def _interval_work(self, lower, upper, invalid):
        """Interval in the work dtype on already prepared bounds."""
        if self.monotone_increasing:
            lo, hi = self.value(lower), self.value(upper)
        else:
            zero = torch.zeros_like(lower)
            lo = self.gap_bound(zero, lower, upper, maximize=False)
            hi = self.gap_bound(zero, lower, upper, maximize=True)
        lo = torch.where(invalid, torch.full_like(lo, -math.inf), lo)
        hi = torch.where(invalid, torch.full_like(hi, math.inf), hi)
        return lo, hi

    def init_params(self, bounds):
        lower, upper = bounds[0]
        prepared_l, prepared_u, _ = self._prepare(lower, upper)
        k_low, k_up = self.default_slopes(prepared_l, prepared_u)
        s_lo, s_hi = self.slope_range(prepared_l, prepared_u)
        span = (s_hi - s_lo)
        safe = torch.where(span > 0, span, torch.ones_like(span))
        t_low = ((k_low - s_lo) / safe).clamp(0, 1)
        t_up = ((k_up - s_lo) / safe).clamp(0, 1)
        return {"lower_t": t_low.to(lower.dtype).unsqueeze(1).clone(),
                "upper_t": t_up.to(lower.dtype).unsqueeze(1).clone()}

    def clip_params(self, params):
        for key in ("lower_t", "upper_t"):
            if key in params:
                params[key].data.clamp_(0.0, 1.0)

    def backward(self, A, ctx):
        """As the base rule, but a zero coefficient times an infinite bias is 0."""
        lower, upper = ctx.input_bounds[0]
        relax = self.relax(lower.unsqueeze(1), upper.unsqueeze(1), ctx.params)
        return infinity_safe_backward(A, relax)


def infinity_safe_backward(A: torch.Tensor, relax: LinearRelaxation):
    a_pos = A.clamp(min=0)
    a_neg = A.clamp(max=0)
    A_in = a_pos * relax.lower_slope + a_neg * relax.upper_slope
    low_term = torch.where(a_pos > 0, a_pos * relax.lower_bias, torch.zeros_like(a_pos))
    up_term = torch.where(a_neg < 0, a_neg * relax.upper_bias, torch.zeros_like(a_neg))
    return [A_in], sum_tail(low_term + up_term)


def round_outward(lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype):
    """Cast interval ends to ``dtype``, rounding outward by one ulp-scale step."""
    eps = torch.finfo(dtype).eps
    lo_c = lo - 2 * eps * lo.abs().nan_to_num(posinf=0.0) - torch.finfo(dtype).tiny
    hi_c = hi + 2 * eps * hi.abs().nan_to_num(posinf=0.0) + torch.finfo(dtype).tiny
    return lo_c.to(dtype), hi_c.to(dtype)
