"""Exact gap analysis for ``sin`` and ``cos`` (any number of periods).

For a slope ``k`` the gap ``h(x) = f(x) - k x`` has, when ``|k| <= 1``,
local maxima at ``c_max + 2 pi n`` and local minima at ``c_min + 2 pi n``:

* ``sin``: ``h' = cos x - k``; maxima at ``acos k`` (there ``sin >= 0``),
  minima at ``-acos k``;
* ``cos``: ``h' = -sin x - k``; maxima at ``-asin k`` (``cos >= 0``),
  minima at ``pi + asin k``.

Shifting a critical point by one period changes ``h`` by ``-2 pi k``, so
among the maxima inside ``[l, u]`` the best is the first one when ``k >= 0``
and the last one when ``k < 0`` (mirrored for minima).  The extreme of ``h``
is therefore the best of the two ends and at most one critical point: exact,
for intervals of any width.  With ``|k| > 1`` ``h`` is monotone.

Critical points are computed without autograd; the value ``h(c)`` keeps the
slope's gradient (envelope theorem: ``dh(c)/dk = -c``).
"""
from __future__ import annotations

import math

import torch

from bounds.ops.relax_utils import CurvedElementwise

TWO_PI = 2.0 * math.pi


def _critical_value(f, slope, lower, upper, base, pick_first: torch.Tensor):
    """``h`` at the first (or last) point ``base + 2 pi n`` inside ``[l, u]``,
    and whether such a point exists."""
    with torch.no_grad():
        first = base + TWO_PI * torch.ceil((lower - base) / TWO_PI)
        last = base + TWO_PI * torch.floor((upper - base) / TWO_PI)
        point = torch.where(pick_first, first, last)
        # rounding of base + 2 pi n can step just outside: pull it back in
        point = torch.minimum(torch.maximum(point, lower), upper)
        exists = (first <= upper) & (last >= lower) & torch.isfinite(base)
    return f(point) - slope * point, exists


def periodic_gap_extreme(kind: str, slope: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                         maximize: bool) -> torch.Tensor:
    f = torch.sin if kind == "sin" else torch.cos
    best_end = (torch.maximum if maximize else torch.minimum)(f(lower) - slope * lower,
                                                               f(upper) - slope * upper)
    with torch.no_grad():
        k = slope.detach()
        usable = k.abs() <= 1
        kc = k.clamp(-1, 1)
        if kind == "sin":
            base = torch.acos(kc) if maximize else -torch.acos(kc)
        else:
            base = -torch.asin(kc) if maximize else math.pi + torch.asin(kc)
        base = torch.where(usable, base, torch.full_like(base, math.nan))
        # maxima: first one when k >= 0; minima: last one when k >= 0
        pick_first = (k >= 0) if maximize else (k < 0)
    crit, exists = _critical_value(f, slope, lower, upper, base, pick_first)
    if maximize:
        return torch.where(exists, torch.maximum(best_end, crit), best_end)
    return torch.where(exists, torch.minimum(best_end, crit), best_end)


class PeriodicElementwise(CurvedElementwise):
    """Sin/Cos: the slope-plus-exact-gap relaxation with the periodic analysis.

    Default slopes: chord, tangents at the ends and the midpoint, and 0
    (constant bounds, best once the interval spans about a period).
    """

    kind = "sin"

    def gap_bound(self, slope, lower, upper, maximize: bool):
        return periodic_gap_extreme(self.kind, slope, lower, upper, maximize)

    def slope_range(self, lower, upper):
        # derivative of sin is cos, of cos is -sin = cos(x + pi/2)
        zero = torch.zeros_like(lower)
        deriv_kind = "cos" if self.kind == "sin" else "sin"
        sign = 1.0 if self.kind == "sin" else -1.0
        lo = periodic_gap_extreme(deriv_kind, zero, lower, upper, maximize=False)
        hi = periodic_gap_extreme(deriv_kind, zero, lower, upper, maximize=True)
        if sign < 0:
            lo, hi = -hi, -lo
        return lo.clamp(-1, 1), hi.clamp(-1, 1)

    def extra_candidates(self, lower, upper):
        zero = torch.zeros_like(lower)
        return [zero], [zero]

    def _interval_work(self, lower, upper, invalid):
        zero = torch.zeros_like(lower)
        lo = periodic_gap_extreme(self.kind, zero, lower, upper, maximize=False)
        hi = periodic_gap_extreme(self.kind, zero, lower, upper, maximize=True)
        return lo.clamp(min=-1), hi.clamp(max=1)
