"""Build the branching-point lookup tables shipped in ``bab/tables/``.

``python -m bab.build_tables [--only sigmoid,tanh] [--size 49]``

For every interval ``(l, u) = (grid[i], grid[j])``, ``i < j``, it evaluates
``split_looseness`` (see :mod:`bab.lookup_table`) at ``RATIOS`` candidate
points ``p = l + r (u - l)`` with the operator's own default relaxation and
keeps the best ratio.  The midpoint ``r = 1/2`` is a candidate, so a table
entry is never worse than the midpoint on its grid interval.  Never run at
verification time (a few seconds per activation here, offline).

Grids: S-shaped and other smooth activations use ``20 sign(t) t^2`` for
uniform ``t`` in [-1, 1] (dense near 0 where the curvature lives, reaching
the saturated tails of the benchmarks' pre-activations); Sin/Cos a uniform
grid over two periods each side of 0.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from bab.lookup_table import RATIO_MIN, TABLE_DIR, split_looseness
from bounds.ops.activations import GELU, Cos, Exp, Pow, Sigmoid, Tanh, Sin

#: Candidate ratios: a uniform grid on [RATIO_MIN, 1 - RATIO_MIN] that contains 1/2.
RATIOS = np.linspace(RATIO_MIN, 1 - RATIO_MIN, 49)


def quadratic_grid(reach: float, size: int) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, size)
    return reach * np.sign(t) * t * t


def uniform_grid(reach: float, size: int) -> np.ndarray:
    return np.linspace(-reach, reach, size)


def activations(size: int) -> dict:
    """Table key -> (operator, grid)."""
    smooth = quadratic_grid(20.0, size)
    return {
        "sigmoid": (Sigmoid(), smooth),
        "tanh": (Tanh(), quadratic_grid(10.0, size)),
        "gelu": (GELU(), smooth),
        "exp": (Exp(), quadratic_grid(10.0, size)),
        "sin": (Sin(), uniform_grid(4 * math.pi, size)),
        "cos": (Cos(), uniform_grid(4 * math.pi, size)),
        "pow2": (Pow(2.0), smooth),
        "pow3": (Pow(3.0), smooth),
    }


def best_ratios(op, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ratio, best, midpoint)``: per grid cell the best ratio, its looseness
    and the midpoint's looseness (``(G, G)`` each; defined for ``i < j``)."""
    size = len(grid)
    rows, cols = np.triu_indices(size, k=1)
    lower = torch.tensor(grid[rows], dtype=torch.float64).unsqueeze(0)
    upper = torch.tensor(grid[cols], dtype=torch.float64).unsqueeze(0)
    ratios = torch.tensor(RATIOS, dtype=torch.float64).unsqueeze(1)
    points = lower + ratios * (upper - lower)
    with torch.no_grad():
        loose = split_looseness(op, lower.expand_as(points), upper.expand_as(points), points)
    loose = torch.nan_to_num(loose, nan=math.inf)
    pick = loose.argmin(0)
    mid_index = int(np.argmin(np.abs(RATIOS - 0.5)))
    ratio = np.full((size, size), 0.5)
    best = np.full((size, size), np.nan)
    midpoint = np.full((size, size), np.nan)
    ratio[rows, cols] = RATIOS[pick.numpy()]
    best[rows, cols] = loose.gather(0, pick.unsqueeze(0)).squeeze(0).numpy()
    midpoint[rows, cols] = loose[mid_index].numpy()
    return ratio, best, midpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated table keys")
    parser.add_argument("--size", type=int, default=81, help="grid points per axis")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wanted = None if args.only is None else set(args.only.split(","))
    TABLE_DIR.mkdir(exist_ok=True)
    for key, (op, grid) in activations(args.size).items():
        if wanted is not None and key not in wanted:
            continue
        started = time.perf_counter()
        ratio, best, midpoint = best_ratios(op, grid)
        np.savez_compressed(TABLE_DIR / f"{key}.npz", grid=grid, ratio=ratio)
        finite = np.isfinite(best) & np.isfinite(midpoint) & (midpoint > 0)
        gain = 1 - np.nanmean(best[finite] / midpoint[finite]) if finite.any() else 0.0
        print(f"{key:8s} {len(grid)}x{len(grid)} cells, mean looseness reduction vs midpoint "
              f"{100 * gain:.1f}%, {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
