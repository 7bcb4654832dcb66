"""Cut constraints in the bound engine (bounds/cuts.py).

* the ReLU step with indicator coefficients is a sound linear lower bound of
  ``A relu(x) + c 1[x >= 0]`` for any slope parameter (sampling, both
  indicator values at ``x = 0``), and equals CROWN's rule when ``c = 0``;
* on random nets with random cuts, every multiplier value gives a bound
  below the LP with the same cuts and intermediate boxes (the big-M
  indicator LP), below the exact MIP, and below the objective at every
  sampled input that satisfies the cuts;
* optimized multipliers reach the LP value on cuts that bind, i.e. the cuts
  really tighten the bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.crown import Propagator
from bounds.cuts import (INDICATOR, Cut, CutConstraints, CutTerm, cut_program_minimum, cut_slack,
                         relu_backward_with_indicators)
from bounds.engine import BoundConfig, compute_bounds
from bounds.ops.base import BackwardContext
from bounds.ops.relu import ReLU
from tests.nets import random_relu_net


def test_relu_step_is_sound_for_any_slope():
    gen = torch.Generator().manual_seed(0)
    n = 800
    lower = -torch.rand(1, n, generator=gen, dtype=torch.float64) * 3
    upper = torch.rand(1, n, generator=gen, dtype=torch.float64) * 3
    lower[0, :100] = torch.rand(100, generator=gen, dtype=torch.float64)        # stable active
    upper[0, 100:200] = -torch.rand(100, generator=gen, dtype=torch.float64)    # stable inactive
    lower[0, 100:200] = upper[0, 100:200] - 1
    A = torch.randn(1, 1, n, generator=gen, dtype=torch.float64) * 2
    c = torch.randn(1, 1, n, generator=gen, dtype=torch.float64) * 2
    c[0, 0, ::5] = 0.0
    alpha = torch.rand(1, 1, n, generator=gen, dtype=torch.float64)             # alpha-CROWN's box [0, 1]
    ctx = BackwardContext([(n,)], [(lower, upper)], {"alpha": alpha})
    (slope,), bias = relu_backward_with_indicators(ReLU(), A, c, ctx)
    t = torch.rand(64, n, generator=gen, dtype=torch.float64)
    x = lower + (upper - lower) * t
    x = torch.cat([x, torch.zeros(1, n, dtype=torch.float64).clamp(lower, upper)])
    h = A[0] * torch.relu(x) + c[0] * (x >= 0)
    h_zero_off = A[0] * torch.relu(x)            # z = 0 is also consistent at x = 0
    h = torch.where(x == 0, torch.minimum(h, h_zero_off), h)
    # neuron-wise bias: evaluate the rule neuron by neuron in one batch
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(0)                         # (1, n, n) rows
    ctx_rows = BackwardContext([(n,)], [(lower, upper)], {"alpha": alpha})
    (slope_rows,), bias_rows = relu_backward_with_indicators(ReLU(), eye * A, eye * c, ctx_rows)
    assert torch.allclose(slope_rows[0].diagonal(), slope[0, 0])
    assert torch.allclose(bias_rows.sum(), bias.sum())
    line = slope[0, 0] * x + bias_rows[0]
    assert bool((line <= h + 1e-9).all()), float((line - h).max())


def test_relu_step_without_indicators_is_crown():
    gen = torch.Generator().manual_seed(1)
    lower = -torch.rand(2, 50, generator=gen)
    upper = torch.rand(2, 50, generator=gen)
    A = torch.randn(2, 3, 50, generator=gen)
    ctx = BackwardContext([(50,)], [(lower, upper)], None)
    ours, ours_bias = relu_backward_with_indicators(ReLU(), A, torch.zeros(2, 3, 50), ctx)
    ref, ref_bias = ReLU().backward(A, ctx)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours_bias, ref_bias)


def _case(seed: int):
    rng = np.random.default_rng(seed)
    graph = random_relu_net(rng, 3, [8, 8], 2, torch.float64)
    lower = torch.tensor(rng.uniform(-1, 0, size=(1, 3)))
    upper = lower + torch.tensor(rng.uniform(0.5, 1.5, size=(1, 3)))
    spec = torch.tensor(rng.normal(size=(1, 1, 2)))
    crown = compute_bounds(graph, lower, upper, spec)
    boxes = {k: v for k, v in crown.intermediate.items() if k in ("fc0", "fc1")}
    unstable = {relu: [i for i in range(8) if boxes[src][0][0, i] < 0 < boxes[src][1][0, i]]
                for src, relu in (("fc0", "relu0"), ("fc1", "relu1"))}
    cuts = []
    for _ in range(3):
        terms = []
        for relu, src in (("relu0", "fc0"), ("relu1", "fc1")):
            if unstable[relu]:
                i = int(rng.choice(unstable[relu]))
                terms.append(CutTerm(relu, i, float(rng.choice([-1.0, 1.0])), INDICATOR))
                terms.append(CutTerm(src if rng.random() < 0.5 else relu, int(rng.integers(8)),
                                     float(rng.normal() * 0.3)))
        if terms:
            cuts.append(Cut(tuple(terms), float(rng.uniform(-0.5, 1.0))))
    return graph, lower, upper, spec, boxes, cuts


@pytest.mark.parametrize("seed", range(6))
def test_any_multiplier_is_below_lp_mip_and_samples(seed):
    graph, lower, upper, spec, boxes, cuts = _case(seed)
    if not cuts:
        pytest.skip("no unstable neurons")
    constraint = CutConstraints.build(graph, cuts, lower)
    lp = cut_program_minimum(graph, lower, upper, spec[0, 0], cuts, boxes, integer=False)
    mip = cut_program_minimum(graph, lower, upper, spec[0, 0], cuts, boxes, integer=True)
    assert lp <= mip + 1e-7
    prop = Propagator(graph, lower, upper)
    bounds, _ = prop.intermediate_bounds(supplied=boxes)
    gen = torch.Generator().manual_seed(seed)
    x = lower + (upper - lower) * torch.rand(20000, 3, generator=gen, dtype=torch.float64)
    values = graph.forward(x, keep=True)
    keep = (cut_slack(cuts, values, graph) >= 0).all(1)
    objective = (values[graph.output_name] @ spec[0].T)[:, 0]
    sampled_min = float(objective[keep].min()) if bool(keep.any()) else float("inf")
    assert mip <= sampled_min + 1e-9
    for trial in range(8):
        mu = torch.rand(1, 1, len(cuts), generator=gen, dtype=torch.float64) * (0 if trial == 0 else 3)
        params = {"relu0": {"alpha": torch.rand(1, 1, 8, generator=gen, dtype=torch.float64)},
                  "relu1": {"alpha": torch.rand(1, 1, 8, generator=gen, dtype=torch.float64)}}
        bound = float(prop.spec_lower(spec, None, bounds, params, [(constraint, mu)]))
        assert bound <= lp + 1e-7, (trial, bound, lp)
    optimized = compute_bounds(graph, lower, upper, spec, intermediate=boxes, constraints=[constraint],
                               config=BoundConfig(method="alpha-crown", alpha_iterations=40, beta_lr=0.3))
    assert float(optimized.lower) <= lp + 1e-7


def test_binding_cuts_tighten_the_bound_to_the_lp():
    """Cuts ``z_i >= 1`` (``-z_i <= -1``) on single neurons: the LP with the
    cut is above the LP without; optimized multipliers close most of that
    gap on most such cuts (the optimization is local, so not always all)."""
    gains = []
    for seed in range(6):
        graph, lower, upper, spec, boxes, _ = _case(seed)
        base = compute_bounds(graph, lower, upper, spec, intermediate=boxes,
                              config=BoundConfig(method="alpha-crown", alpha_iterations=60))
        base_lp = cut_program_minimum(graph, lower, upper, spec[0, 0], [], boxes, integer=False)
        assert float(base.lower) <= base_lp + 1e-7
        for src, relu in (("fc0", "relu0"), ("fc1", "relu1")):
            for i in range(8):
                if not boxes[src][0][0, i] < 0 < boxes[src][1][0, i]:
                    continue
                cut = Cut((CutTerm(relu, i, -1.0, INDICATOR),), -1.0)
                lp = cut_program_minimum(graph, lower, upper, spec[0, 0], [cut], boxes, integer=False)
                result = compute_bounds(graph, lower, upper, spec, intermediate=boxes,
                                        constraints=[CutConstraints.build(graph, [cut], lower)],
                                        config=BoundConfig(method="alpha-crown", alpha_iterations=40,
                                                           beta_lr=0.5))
                bound = float(result.lower)
                assert bound <= lp + 1e-7
                if lp > base_lp + 0.05 and np.isfinite(lp):
                    gains.append((bound - float(base.lower)) / (lp - base_lp))
    assert len(gains) >= 3, "too few binding cuts"
    assert np.mean(np.array(gains) > 0.5) >= 0.5, gains
    assert max(gains) > 0.95, gains
