"""Branching-point lookup tables: shipped, strictly interior, never worse than
the midpoint on the grid, vectorized, and the children's relaxations sound."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bab.build_tables import activations
from bab.lookup_table import (RATIO_MIN, branching_points, load_table, looseness, split_looseness,
                              table_key)
from bounds.ops.activations import GELU, Cos, Exp, Pow, Sigmoid, Sin, Tanh
from bounds.ops.product import Mul2

KEYS = ["sigmoid", "tanh", "gelu", "exp", "sin", "cos", "pow2", "pow3"]
OPS = {key: op for key, (op, _) in activations(5).items()}


@pytest.mark.parametrize("key", KEYS)
def test_table_points_inside_and_never_worse_than_midpoint(key):
    table = load_table(key)
    assert table is not None, f"bab/tables/{key}.npz missing: run python -m bab.build_tables"
    op = OPS[key]
    grid = table.grid
    rows, cols = np.triu_indices(len(grid), k=1)
    lower = torch.tensor(grid[rows], dtype=torch.float64)
    upper = torch.tensor(grid[cols], dtype=torch.float64)
    point = branching_points(op, lower, upper)
    assert bool(((point > lower) & (point < upper)).all())
    ratio = (point - lower) / (upper - lower)
    assert float(ratio.min()) >= RATIO_MIN - 1e-9 and float(ratio.max()) <= 1 - RATIO_MIN + 1e-9
    with torch.no_grad():
        chosen = split_looseness(op, lower, upper, point)
        mid = split_looseness(op, lower, upper, (lower + upper) / 2)
    finite = torch.isfinite(mid)
    assert bool(finite.float().mean() > 0.9)
    tolerance = 1e-9 * (1 + mid[finite].abs())
    assert bool((chosen[finite] <= mid[finite] + tolerance).all())
    if key != "pow2":  # x^2: the midpoint is optimal by symmetry
        assert float((chosen[finite] / mid[finite].clamp(min=1e-12)).mean()) < 0.95


@pytest.mark.parametrize("key", ["sigmoid", "tanh", "gelu", "sin"])
def test_interpolated_points_beat_midpoint_off_grid(key):
    """Between grid nodes the interpolated ratio should still help on average."""
    op = OPS[key]
    gen = torch.Generator().manual_seed(0)
    reach = float(load_table(key).grid[-1]) * 0.9
    a = (torch.rand(500, generator=gen, dtype=torch.float64) * 2 - 1) * reach
    b = (torch.rand(500, generator=gen, dtype=torch.float64) * 2 - 1) * reach
    lower, upper = torch.minimum(a, b), torch.maximum(a, b) + 1e-3
    point = branching_points(op, lower, upper)
    with torch.no_grad():
        chosen = split_looseness(op, lower, upper, point)
        mid = split_looseness(op, lower, upper, (lower + upper) / 2)
    assert float(chosen.sum()) < 0.95 * float(mid.sum())


def test_lookup_is_vectorized_and_keeps_dtype():
    op = Sigmoid()
    lower = torch.linspace(-30, 5, 60, dtype=torch.float32).reshape(3, 4, 5)
    upper = lower + torch.linspace(0.01, 40, 60, dtype=torch.float32).reshape(3, 4, 5)
    point = branching_points(op, lower, upper)
    assert point.shape == lower.shape and point.dtype == torch.float32
    assert bool(((point > lower) & (point < upper)).all())
    # intervals reaching outside the grid [-20, 20] use the midpoint
    outside = (lower < -20) | (upper > 20)
    assert bool(outside.any())
    mid = lower + (upper - lower) / 2
    assert torch.equal(point[outside], mid[outside])
    assert not torch.equal(point[~outside], mid[~outside])


def test_keys_and_fallbacks():
    assert table_key(Sigmoid()) == "sigmoid" and table_key(Pow(2.0)) == "pow2"
    assert table_key(Pow(0.5)) is None and table_key(Mul2()) is None
    lower, upper = torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 1.0])
    assert torch.equal(branching_points(Mul2(), lower, upper), torch.tensor([1.0, 0.5]))
    assert torch.equal(branching_points(Sigmoid(), lower, upper, use_table=False), torch.tensor([1.0, 0.5]))
    # no float strictly inside a zero-width interval: the midpoint (the end) comes back
    same = torch.tensor([2.0])
    assert torch.equal(branching_points(Sigmoid(), same, same), same)


def test_looseness_of_exact_line_is_zero_and_area_is_right():
    class Line:
        upper_slope = torch.tensor(1.0)
        lower_slope = torch.tensor(0.0)
        upper_bias = torch.tensor(0.0)
        lower_bias = torch.tensor(0.0)
    # area between y = x and y = 0 over [0, 2] is 2
    assert float(looseness(Line, torch.tensor(0.0), torch.tensor(2.0))) == pytest.approx(2.0)


SUB_OPS = [Sigmoid(), Tanh(), GELU(), Exp(), Sin(), Cos(), Pow(2.0), Pow(3.0)]


@settings(max_examples=60, deadline=None)
@given(op_index=st.integers(0, len(SUB_OPS) - 1), lo=st.floats(-12, 12), width=st.floats(1e-3, 15),
       seed=st.integers(0, 2 ** 16))
def test_children_relaxations_enclose_samples(op_index, lo, width, seed):
    """Each sub-interval [l, p], [p, u] with the table's p gets a sound relaxation."""
    op = SUB_OPS[op_index]
    lower = torch.tensor([lo], dtype=torch.float32)
    upper = torch.tensor([lo + width], dtype=torch.float32)
    point = branching_points(op, lower, upper)
    assert bool((point > lower) & (point < upper)) or width < 1e-6
    gen = torch.Generator().manual_seed(seed)
    for a, b in ((lower, point), (point, upper)):
        relax = op.relax(a, b)
        x = a + (b - a) * torch.rand(257, generator=gen)
        x = torch.cat([x, a, b])
        y = op.forward(x.double())
        low = relax.lower_slope.double() * x.double() + relax.lower_bias.double()
        up = relax.upper_slope.double() * x.double() + relax.upper_bias.double()
        slack = 1e-6 * (1 + y.abs())
        assert bool((low <= y + slack).all()), (op, a, b)
        assert bool((up >= y - slack).all()), (op, a, b)
        if math.isfinite(float(relax.upper_bias)):
            assert bool(torch.isfinite(relax.upper_slope).all())
