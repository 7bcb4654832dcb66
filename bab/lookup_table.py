"""Pre-optimized branching points for general nonlinearities (GenBaB).

Splitting the input interval ``[l, u]`` of a neuron ``y = f(z)`` at ``p``
gives two children whose relaxations are computed on ``[l, p]`` and
``[p, u]``.  A good ``p`` makes the children's relaxations tight.  We measure
the *looseness* of a relaxation ``a_l z + b_l <= f(z) <= a_u z + b_u`` on
``[a, b]`` as the area between its two lines,

    looseness(a, b) = int_a^b (a_u - a_l) z + (b_u - b_l) dz
                    = (b - a) * ((a_u - a_l) (a + b) / 2 + (b_u - b_l)),

and choose ``p`` minimizing ``looseness(l, p) + looseness(p, u)``.

Doing that search per neuron at verification time would be far too slow, so
``scripts/build_branching_tables.py`` solves it offline on a grid of
intervals and stores, per activation, the optimal *ratio*
``r = (p - l) / (u - l)`` in ``bab/tables/<key>.npz``.  At run time
:func:`branching_points` interpolates the ratio bilinearly in ``(l, u)``; a
ratio in ``(0, 1)`` keeps ``p`` strictly inside the interval whatever the
interpolation does.  Intervals leaving the grid, operators without a table
(products, ReLU-like kinks use their own points) fall back to the midpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

TABLE_DIR = Path(__file__).resolve().parent / "tables"

#: Ratios are kept inside [RATIO_MIN, 1 - RATIO_MIN] so children are never degenerate.
RATIO_MIN = 0.02


def table_key(op) -> str | None:
    """File stem of the table of an operator, or ``None`` (midpoint)."""
    op_type = getattr(op, "op_type", "")
    if op_type in ("Sigmoid", "Tanh", "Sin", "Cos", "Exp", "Gelu"):
        return op_type.lower()
    if op_type == "Pow":
        exponent = float(op.exponent)
        if exponent == round(exponent) and 2 <= exponent <= 4:
            return f"pow{int(exponent)}"
    return None


def looseness(relax, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Area between the upper and lower relaxation lines over ``[lower, upper]``.

    ``relax``: a :class:`~bounds.ops.base.LinearRelaxation` valid on that
    interval (tensors broadcasting with ``lower``).  Infinite biases (no finite
    linear bound) give ``inf``.
    """
    slope_gap = relax.upper_slope - relax.lower_slope
    bias_gap = relax.upper_bias - relax.lower_bias
    width = upper - lower
    return width * (slope_gap * (lower + upper) / 2 + bias_gap)


def split_looseness(op, lower: torch.Tensor, upper: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """``looseness(l, p) + looseness(p, u)`` with the operator's own default relaxation."""
    left = looseness(op.relax(lower, point), lower, point)
    right = looseness(op.relax(point, upper), point, upper)
    return left + right


@dataclass(frozen=True)
class BranchingTable:
    """Optimal split ratios on a grid of intervals.

    ``grid``: sorted interval ends ``(G,)``; ``ratio[i, j]`` is the ratio for
    ``(l, u) = (grid[i], grid[j])`` when ``i < j`` (0.5 elsewhere, where it
    is only read by interpolation near the diagonal).
    """

    key: str
    grid: np.ndarray
    ratio: np.ndarray

    def ratios(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Bilinearly interpolated ratio per element (NaN outside the grid)."""
        grid, table = _device_tensors(self, lower.device)
        lo = lower.detach().to(torch.float64)
        up = upper.detach().to(torch.float64)
        inside = (lo >= grid[0]) & (up <= grid[-1]) & (up > lo)
        last = grid.numel() - 2
        lo_c = lo.clamp(float(grid[0]), float(grid[-1]))
        up_c = up.clamp(float(grid[0]), float(grid[-1]))
        i = (torch.searchsorted(grid, lo_c.contiguous(), right=True) - 1).clamp(0, last)
        j = (torch.searchsorted(grid, up_c.contiguous(), right=True) - 1).clamp(0, last)
        wi = ((lo_c - grid[i]) / (grid[i + 1] - grid[i])).clamp(0, 1)
        wj = ((up_c - grid[j]) / (grid[j + 1] - grid[j])).clamp(0, 1)
        cols = table.shape[1]

        def at(a, b):
            return table.flatten()[a * cols + b]

        value = ((1 - wi) * (1 - wj) * at(i, j) + (1 - wi) * wj * at(i, j + 1)
                 + wi * (1 - wj) * at(i + 1, j) + wi * wj * at(i + 1, j + 1))
        value = value.clamp(RATIO_MIN, 1 - RATIO_MIN)
        return torch.where(inside, value, torch.full_like(value, math.nan))


_DEVICE_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _device_tensors(table: BranchingTable, device: torch.device):
    """The table as float64 tensors on ``device`` (cached: tables are immutable)."""
    cache_key = (table.key, str(device))
    if cache_key not in _DEVICE_CACHE:
        dtype = torch.float64 if device.type != "mps" else torch.float32
        _DEVICE_CACHE[cache_key] = (torch.as_tensor(table.grid, dtype=dtype, device=device),
                                    torch.as_tensor(table.ratio, dtype=dtype, device=device))
    return _DEVICE_CACHE[cache_key]


@lru_cache(maxsize=None)
def load_table(key: str) -> BranchingTable | None:
    """The shipped table ``bab/tables/<key>.npz`` (``None`` when absent)."""
    path = TABLE_DIR / f"{key}.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return BranchingTable(key, np.asarray(data["grid"], dtype=np.float64),
                              np.asarray(data["ratio"], dtype=np.float64))


def branching_points(op, lower: torch.Tensor, upper: torch.Tensor, use_table: bool = True) -> torch.Tensor:
    """Split point ``p`` per element for an element-wise operator, strictly
    inside ``(lower, upper)`` wherever the interval has room for one.

    Vectorized: ``lower``/``upper`` of any (equal) shape; result in their
    dtype and device.
    """
    mid = lower + (upper - lower) / 2
    key = table_key(op) if use_table else None
    table = None if key is None else load_table(key)
    if table is None:
        return mid
    ratio = table.ratios(lower, upper)
    wide_lower, wide_upper = lower.to(ratio.dtype), upper.to(ratio.dtype)
    point = (wide_lower + ratio * (wide_upper - wide_lower)).to(lower.dtype)
    # off the grid (NaN ratio), or rounding to the caller's dtype landed on an end
    bad = ~((point > lower) & (point < upper))
    return torch.where(bad, mid, point)
