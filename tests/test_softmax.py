"""Softmax linear relaxation: sound by sampling (hypothesis), tighter than the
constant bounds on narrow boxes, and enough for CROWN to prove a real vit
instance (2023_vit pgd_2_3_16, unsat)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bounds.ops.base import BackwardContext
from bounds.ops.softmax import Softmax

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _box(gen, shape, centre_scale, width_scale, dtype):
    centre = torch.randn(2, *shape, generator=gen, dtype=torch.float64) * centre_scale
    width = torch.rand(2, *shape, generator=gen, dtype=torch.float64) * width_scale
    width = torch.where(torch.rand(width.shape, generator=gen) < 0.2, torch.zeros_like(width), width)
    return (centre - width).to(dtype), (centre + width).to(dtype)


def _samples(gen, box, count):
    lo, up = box
    t = torch.rand(count, *lo.shape, generator=gen, dtype=torch.float64)
    t = torch.where(t < 0.2, torch.zeros_like(t), torch.where(t > 0.8, torch.ones_like(t), t))  # vertices
    return (lo.double() + t * (up.double() - lo.double())).to(lo.dtype)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), centre=st.sampled_from([0.1, 1.0, 5.0, 40.0]),
       width=st.sampled_from([1e-4, 0.1, 1.0, 10.0, 300.0]), axis=st.sampled_from([0, 1, 2]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_linear_rows_enclose_samples(seed, centre, width, axis, dtype):
    """``low_coeff @ x + low_bias <= softmax(x) <= up_coeff @ x + up_bias`` at
    sampled points (vertices included), evaluated in the working dtype."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, 4)
    op = Softmax(axis)
    box = _box(gen, shape, centre, width, dtype)
    low_coeff, low_bias, up_coeff, up_bias = op.relax_rows(*box)
    points = _samples(gen, box, 300)
    for x in points:
        y = op.forward(x).movedim(op.dim, -1)
        xm = x.movedim(op.dim, -1).unsqueeze(-1)
        below = (low_coeff @ xm).squeeze(-1) + low_bias
        above = (up_coeff @ xm).squeeze(-1) + up_bias
        assert int((below > y).sum()) == 0, (below - y).max()
        assert int((above < y).sum()) == 0, (y - above).max()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), width=st.sampled_from([0.01, 0.5, 3.0]))
def test_backward_sound_both_signs(seed, width):
    """The backward rule: ``sum(A y) >= sum(A_in x) + bias`` for random ``A``."""
    _assert_backward_encloses(seed, width, random_params=False)


def _assert_backward_encloses(seed: int, width: float, random_params: bool) -> None:
    """``sum(A y) >= sum(A_in x) + bias`` at 200 sampled points of a random
    box, for random ``A`` (and random parameters in [0, 1] if asked)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 5)
    op = Softmax(1)
    box = _box(gen, shape, 2.0, width, torch.float64)
    params = None
    if random_params:
        params = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64)
                  for k, v in op.init_params([box]).items()}
    A = torch.randn(2, 4, *shape, generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A, BackwardContext(input_shapes=[shape], input_bounds=[box], params=params))
    for x in _samples(gen, box, 200):
        lhs = (A * op.forward(x).unsqueeze(1)).flatten(2).sum(-1)
        rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
        assert int((lhs < rhs - 1e-12).sum()) == 0


def test_linear_bounds_beat_constant_bounds_on_narrow_boxes():
    """On a narrow box the linear rows, minimized/maximized over the box, are
    tighter than the constant interval bounds, and exact at a point box."""
    x = torch.tensor([[0.3, -1.2, 2.0, 0.5, 0.0]], dtype=torch.float64)
    op = Softmax(0)
    low_coeff, low_bias, up_coeff, up_bias = op.relax_rows(x, x)
    exact = torch.softmax(x, -1)
    torch.testing.assert_close((low_coeff @ x.unsqueeze(-1)).squeeze(-1) + low_bias, exact, atol=1e-12, rtol=0)
    torch.testing.assert_close((up_coeff @ x.unsqueeze(-1)).squeeze(-1) + up_bias, exact, atol=1e-12, rtol=0)
    # the gap of the linear bounds at the centre is far below the interval width
    lo, up = x - 0.05, x + 0.05
    low_coeff, low_bias, up_coeff, up_bias = op.relax_rows(lo, up)
    const_low, const_up = op.interval((lo, up))
    gap_linear = ((up_coeff - low_coeff) @ x.unsqueeze(-1)).squeeze(-1) + up_bias - low_bias
    assert float(gap_linear.max()) < 0.05 * float((const_up - const_low).max())


def test_non_finite_box_falls_back_to_constant_bounds():
    lo = torch.tensor([[0.0, -float("inf"), 1.0]])
    up = torch.tensor([[1.0, 2.0, float("inf")]])
    low_coeff, low_bias, up_coeff, up_bias = Softmax(0).relax_rows(lo, up)
    assert float(low_coeff.abs().sum()) == 0 and float(up_coeff.abs().sum()) == 0
    const_low, const_up = Softmax(0).interval((lo, up))
    torch.testing.assert_close(low_bias, const_low)
    torch.testing.assert_close(up_bias, const_up)


def test_vit_unsat_instance_proven_by_crown():
    """2023_vit pgd_2_3_16 idx 9470 (unsat): with constant Softmax bounds CROWN
    ended at about -5.8; with the linear relaxation every clause row is > 0."""
    from bounds.engine import BoundConfig, compute_bounds
    from verifier.onnx_import import load_onnx
    from vnnlib import parse_vnnlib

    graph = load_onnx(BENCH / "2023_vit/onnx/pgd_2_3_16.onnx")
    prop = parse_vnnlib(BENCH / "2023_vit/vnnlib/pgd_2_3_16_9470.vnnlib").properties[0]
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.tensor(prop.box.lower, dtype=torch.float32).reshape(shape)
    upper = torch.tensor(prop.box.upper, dtype=torch.float32).reshape(shape)
    spec = torch.tensor(np.concatenate([c.matrix for c in prop.clauses]), dtype=torch.float32).unsqueeze(0)
    offset = torch.tensor(np.concatenate([c.offset for c in prop.clauses]), dtype=torch.float32).unsqueeze(0)
    result = compute_bounds(graph, lower, upper, spec, offset, config=BoundConfig(method="crown"))
    assert float(result.lower.min()) > 0.0
    # and the bound is sound: sampled points satisfy every row
    gen = torch.Generator().manual_seed(0)
    points = lower + torch.rand((64,) + shape[1:], generator=gen) * (upper - lower)
    values = graph.forward(points).reshape(64, -1) @ spec[0].T - offset[0]
    assert bool((values >= result.lower - 1e-4).all())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), width=st.sampled_from([0.01, 0.5, 3.0]))
def test_backward_sound_for_any_alpha_parameters(seed, width):
    """alpha-CROWN's tangent points (random in [0, 1]) never break soundness."""
    _assert_backward_encloses(seed, width, random_params=True)


def test_default_parameters_reproduce_the_crown_relaxation():
    gen = torch.Generator().manual_seed(5)
    box = _box(gen, (2, 4), 1.0, 0.7, torch.float64)
    op = Softmax(1)
    plain = op.relax_rows(*box)
    with_params = op.relax_rows(*box, op.init_params([box]))
    for a, b in zip(plain, with_params):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
