"""Soundness (by dense sampling) and tightness of every element-wise relaxation."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounds.ops.activations import (GELU, Clip, Cos, Erf, Exp, Floor, LeakyReLU, Log, Pow, Reciprocal, Sigmoid,
                                    Sign, Sin, Sqrt, Tanh)
from bounds.ops.activations_extra import SELU_ALPHA, SELU_GAMMA, Atan, Elu, HardSwish, Softplus, Softsign
from bounds.ops.base import BackwardContext
from bounds.ops.relu import ReLU

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
torch.set_num_threads(1)

# (op, domain): "all" reals, "pos" x > 0, "nonneg" x >= 0, "nonzero" one sign
OPS = {
    "relu": (ReLU(), "all"), "sigmoid": (Sigmoid(), "all"), "tanh": (Tanh(), "all"), "erf": (Erf(), "all"),
    "exp": (Exp(), "exp"), "log": (Log(), "pos"), "sqrt": (Sqrt(), "nonneg"), "reciprocal": (Reciprocal(), "nonzero"),
    "gelu": (GELU(), "all"), "pow2": (Pow(2), "all"), "pow3": (Pow(3), "all"), "pow-1": (Pow(-1), "nonzero"),
    "pow-2": (Pow(-2), "nonzero"), "pow0.5": (Pow(0.5), "nonneg"), "pow1.5": (Pow(1.5), "nonneg"),
    "pow-0.5": (Pow(-0.5), "pos"), "leaky": (LeakyReLU(0.1), "all"), "leaky_neg": (LeakyReLU(-0.3), "all"),
    "leaky_steep": (LeakyReLU(3.0), "all"), "clip": (Clip(-1.0, 2.0), "all"), "clip_max": (Clip(None, 0.5), "all"),
    "sin": (Sin(), "all"), "cos": (Cos(), "all"), "sign": (Sign(), "all"), "floor": (Floor(), "all"),
    "atan": (Atan(), "all"), "softsign": (Softsign(), "all"), "softplus": (Softplus(), "all"),
    "elu": (Elu(), "all"), "elu_small": (Elu(0.3), "all"), "elu_neg": (Elu(-0.5), "all"),
    "selu": (Elu(SELU_ALPHA, SELU_GAMMA), "all"), "hardswish": (HardSwish(), "all"),
}
N_INTERVALS = 48
N_POINTS = 65
EXAMPLES = 40


def true_value(op, x: torch.Tensor) -> torch.Tensor:
    """``f`` in float64 (GELU through its erf formula)."""
    if isinstance(op, GELU):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    return op.forward(x)


def make_intervals(seed: int, domain: str, scale: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Random intervals: narrow, wide, degenerate, crossing 0, at the domain edge."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(N_INTERVALS, generator=gen, dtype=torch.float64) * scale
    kind = torch.randint(0, 4, (N_INTERVALS,), generator=gen)
    width = torch.rand(N_INTERVALS, generator=gen, dtype=torch.float64)
    width = torch.where(kind == 0, torch.zeros_like(width), width)                  # a point
    width = torch.where(kind == 1, width * 1e-7 * (1 + centre.abs()), width)         # very narrow
    width = torch.where(kind == 2, width * scale, width)                              # comparable to scale
    width = torch.where(kind == 3, width * 10 * scale, width)                         # wide
    lower, upper = centre - width / 2, centre + width / 2
    if domain == "exp":
        limit = 80.0 if dtype == torch.float32 else 700.0
        lower, upper = lower.clamp(max=limit), upper.clamp(max=limit)
    elif domain in ("pos", "nonneg", "nonzero"):
        # move to the positive side; half of them touch the domain edge
        shift = torch.where(kind % 2 == 0, -lower + (1e-6 if domain != "nonneg" else 0.0), lower.abs() + 1e-3)
        lower, upper = lower + shift, upper + shift
        if domain == "nonzero":
            flip = torch.rand(N_INTERVALS, generator=gen) < 0.5
            lower, upper = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    lower, upper = lower.to(dtype), upper.to(dtype)
    return lower, upper


def sample_points(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Endpoints, a grid and random points, in float64, inside ``[l, u]``."""
    ts = torch.cat([torch.linspace(0, 1, N_POINTS - 16, dtype=torch.float64), torch.rand(16, dtype=torch.float64)])
    lo, up = lower.double(), upper.double()
    x = lo + ts[:, None] * (up - lo)
    return torch.minimum(torch.maximum(x, lo), up)


def check_relaxation(op, lower, upper, params=None) -> int:
    """Number of violations of the relaxation and of the interval."""
    relax = op.relax(lower, upper, params)
    lo_i, hi_i = op.interval((lower, upper))
    for t in (relax.lower_slope, relax.lower_bias, relax.upper_slope, relax.upper_bias, lo_i, hi_i):
        assert not torch.isnan(t).any()
        assert t.dtype == lower.dtype
    x = sample_points(lower, upper)
    fx = true_value(op, x)
    meaningful = torch.isfinite(fx) & (fx.abs() < torch.finfo(lower.dtype).max)
    tol = 1e-12 * (1 + fx.abs())
    low = relax.lower_slope.double() * x + relax.lower_bias.double()
    up = relax.upper_slope.double() * x + relax.upper_bias.double()
    bad = (low > fx + tol) | (up < fx - tol) | (fx < lo_i.double() - tol) | (fx > hi_i.double() + tol)
    return int((bad & meaningful).sum())


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 0.3, 1.0, 3.0, 20.0, 1e4]),
       double=st.booleans(), use_params=st.booleans())
def test_relaxation_encloses_function(name, seed, scale, double, use_params):
    op, domain = OPS[name]
    dtype = torch.float64 if double else torch.float32
    lower, upper = make_intervals(seed, domain, scale, dtype)
    params = None
    if use_params:
        params = op.init_params([(lower, upper)])
        if params:
            gen = torch.Generator().manual_seed(seed)
            for key, value in params.items():  # random, even infeasible, then projected
                params[key] = (torch.rand(value.shape, generator=gen) * 1.6 - 0.3).to(value.dtype)
            op.clip_params(params)
            params = {k: v.squeeze(1) for k, v in params.items()}  # relax gets (B, *shape) here
    assert check_relaxation(op, lower, upper, params) == 0


def test_relax_handles_backward_shapes():
    """``(B, 1, *shape)`` bounds with ``(B, S, *shape)`` params broadcast."""
    op = Sigmoid()
    lower = torch.tensor([[-2.0, 0.5, -1.0]])
    upper = torch.tensor([[1.0, 3.0, -0.5]])
    params = {k: v.expand(1, 4, 3).clone() for k, v in op.init_params([(lower, upper)]).items()}
    relax = op.relax(lower.unsqueeze(1), upper.unsqueeze(1), params)
    assert relax.lower_slope.shape == (1, 4, 3)
    A = torch.randn(1, 4, 3)
    ctx = BackwardContext(input_shapes=[(3,)], input_bounds=[(lower, upper)], params=params)
    (A_in,), bias = op.backward(A, ctx)
    assert A_in.shape == (1, 4, 3) and bias.shape == (1, 4)


def test_relu_exact_on_stable_and_default_alpha():
    op = ReLU()
    lower = torch.tensor([0.5, -3.0, -1.0, -1.0])
    upper = torch.tensor([2.0, -0.1, 3.0, 0.5])
    r = op.relax(lower, upper)
    assert r.lower_slope.tolist()[:2] == [1.0, 0.0] and r.upper_slope.tolist()[:2] == [1.0, 0.0]
    assert r.lower_bias.tolist()[:2] == [0.0, 0.0] and r.upper_bias.tolist()[:2] == [0.0, 0.0]
    assert r.lower_slope.tolist()[2:] == [1.0, 0.0]          # CROWN's adaptive choice
    assert r.upper_slope[2].item() == pytest.approx(0.75)    # chord u / (u - l)
    assert r.upper_bias[2].item() == pytest.approx(0.75, abs=1e-5)


def test_convex_and_concave_defaults_are_chord_and_midpoint_tangent():
    lower, upper = torch.tensor([0.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    r = Exp().relax(lower, upper)
    chord = (math.exp(2) - 1) / 2
    assert r.upper_slope.item() == pytest.approx(chord) and r.upper_bias.item() == pytest.approx(1.0)
    assert r.lower_slope.item() == pytest.approx(math.e)  # tangent at the midpoint 1
    assert r.lower_bias.item() == pytest.approx(0.0, abs=1e-9)
    r = Log().relax(lower + 1, upper + 1)
    assert r.upper_slope.item() == pytest.approx(0.5) and r.lower_slope.item() == pytest.approx(math.log(3) / 2)


def test_sigmoid_crossing_uses_tangent_through_endpoint():
    """On [-5, 5] the upper line is tangent to sigmoid and passes through (-5, sigmoid(-5))."""
    l, u = torch.tensor([-5.0], dtype=torch.float64), torch.tensor([5.0], dtype=torch.float64)
    r = Sigmoid().relax(l, u)
    at_l = r.upper_slope * l + r.upper_bias
    assert at_l.item() == pytest.approx(torch.sigmoid(l).item(), abs=1e-6)
    assert 0.10 < r.upper_slope.item() < 0.15
    assert r.upper_bias.item() == pytest.approx(0.5 + 5 * r.upper_slope.item() - 0.5 + torch.sigmoid(l).item(), abs=1e-6)


@pytest.mark.parametrize("op", [Sigmoid(), Tanh(), GELU(), Sin(), Exp(), Atan(), Softsign(), Softplus()], ids=repr)
def test_gap_shrinks_quadratically(op):
    """Max distance between the two lines on [c-w, c+w] is O(w^2)."""
    centre = torch.tensor([-1.3, 0.0, 0.4, 2.5], dtype=torch.float64)
    gaps = []
    for w in (0.4, 0.1, 0.025):
        r = op.relax(centre - w, centre + w)
        x = sample_points(centre - w, centre + w)
        gap = ((r.upper_slope - r.lower_slope) * x + r.upper_bias - r.lower_bias).amax()
        gaps.append(gap.item())
    assert gaps[1] < gaps[0] / 8 and gaps[2] < gaps[1] / 8
    assert gaps[2] < 5e-3


def test_periodic_wide_interval_is_constant_and_exact_interval():
    l, u = torch.tensor([-100.0]), torch.tensor([100.0])
    r = Sin().relax(l, u)
    assert r.lower_slope.item() == 0 and r.upper_slope.item() == 0
    assert r.upper_bias.item() == pytest.approx(1.0, abs=1e-5) and r.lower_bias.item() == pytest.approx(-1.0, abs=1e-5)
    lo, hi = Cos().interval((torch.tensor([0.1]), torch.tensor([3.0])))
    assert lo.item() == pytest.approx(math.cos(3.0), abs=1e-6) and hi.item() == pytest.approx(math.cos(0.1), abs=1e-6)


def test_non_monotone_intervals():
    lo, hi = GELU().interval((torch.tensor([-3.0]), torch.tensor([1.0])))
    assert lo.item() == pytest.approx(-0.169971, abs=1e-5) and hi.item() == pytest.approx(0.841345, abs=1e-5)
    lo, hi = Pow(2).interval((torch.tensor([-2.0]), torch.tensor([1.0])))
    assert lo.item() == pytest.approx(0.0, abs=1e-6) and hi.item() == pytest.approx(4.0, abs=1e-5)


def test_domain_errors_give_infinite_bounds_not_nan():
    l, u = torch.tensor([-1.0, 1.0]), torch.tensor([2.0, 2.0])
    for op in (Log(), Reciprocal(), Pow(-1)):
        r = op.relax(l, u)
        assert r.lower_bias[0].item() == -math.inf and r.upper_bias[0].item() == math.inf
        assert torch.isfinite(r.lower_bias[1]) and torch.isfinite(r.upper_bias[1])
        A = torch.tensor([[[0.0, 1.0]]])
        (A_in,), bias = op.backward(A, BackwardContext([(2,)], [(l[None], u[None])]))
        assert torch.isfinite(bias).all()  # zero coefficient on the unbounded neuron


def test_alpha_params_gradient_and_improvement():
    """The relaxation is differentiable in its params; optimising can only move within sound lines."""
    op = Tanh()
    lower, upper = torch.tensor([[-2.0, -0.5]]), torch.tensor([[1.0, 3.0]])
    params = {k: v.requires_grad_() for k, v in op.init_params([(lower, upper)]).items()}
    relax = op.relax(lower.unsqueeze(1), upper.unsqueeze(1), params)
    (relax.lower_bias.sum() + relax.upper_bias.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())


# ------------------------------------------------------------- real instance
def _vnnlib_box(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    lower, upper = torch.full((n,), -math.inf, dtype=torch.float64), torch.full((n,), math.inf, dtype=torch.float64)
    for op_, idx, val in re.findall(r"\(assert \(([<>]=) X_(\d+) ([-+0-9.eE]+)\)\)", path.read_text()):
        (upper if op_ == "<=" else lower)[int(idx)] = float(val)
    return lower, upper


def test_eran_sigmoid_first_layers_crown_vs_sampling():
    """ERAN 6x200 sigmoid net, spec idx 7895: bound layer 2 through the first sigmoid by
    CROWN with our relaxation; every sampled input lies inside, and it beats IBP."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    net = BENCHMARKS / "2021_eran" / "nets" / "ffnnSIGMOID__Point_6x200.onnx"
    spec = BENCHMARKS / "2021_eran" / "specs" / "mnist" / "mnist_spec_idx_7895_eps_0.01200.vnnlib"
    model = onnx.load(str(net))
    init = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64) for t in model.graph.initializer}
    consts = [torch.tensor(numpy_helper.to_array(n.attribute[0].t), dtype=torch.float64)
              for n in model.graph.node if n.op_type == "Constant"]
    mean, std = consts[0].reshape(-1)[0], consts[1].reshape(-1)[0]
    W1, b1, W2, b2 = init["2.weight"], init["2.bias"], init["4.weight"], init["4.bias"]
    x_lo, x_hi = _vnnlib_box(spec, 784)
    W1n, b1n = W1 / std, b1 - W1.sum(1) * mean / std  # fold (x - mean) / std into layer 1
    centre, radius = (x_hi + x_lo) / 2, (x_hi - x_lo) / 2
    z_lo, z_hi = W1n @ centre + b1n - W1n.abs() @ radius, W1n @ centre + b1n + W1n.abs() @ radius
    op = Sigmoid()
    relax = op.relax(z_lo, z_hi)
    # lower bound of z2 = W2 sigmoid(z1) + b2, back through the relaxation to the input box
    pos, neg = W2.clamp(min=0), W2.clamp(max=0)
    slope = pos * relax.lower_slope + neg * relax.upper_slope
    bias = pos @ relax.lower_bias + neg @ relax.upper_bias + b2
    A_x = slope @ W1n
    crown_lo = A_x @ centre - A_x.abs() @ radius + slope @ b1n + bias
    s_lo, s_hi = op.interval((z_lo, z_hi))
    ibp_lo = pos @ s_lo + neg @ s_hi + b2
    gen = torch.Generator().manual_seed(0)
    x = x_lo + torch.rand(2000, 784, dtype=torch.float64, generator=gen) * (x_hi - x_lo)
    z2 = torch.sigmoid(x @ W1n.T + b1n) @ W2.T + b2
    assert (z2 >= crown_lo - 1e-9).all() and (z2 >= ibp_lo - 1e-9).all()
    assert (crown_lo >= ibp_lo - 1e-9).float().mean() > 0.9
    # measured: mean slack to the sampled minimum 0.845 (CROWN) vs 1.079 (IBP)
    crown_slack, ibp_slack = (z2.amin(0) - crown_lo).mean(), (z2.amin(0) - ibp_lo).mean()
    assert crown_slack < 0.85 and ibp_slack > 1.0
    assert (crown_lo - ibp_lo).mean() > 0.2
    assert np.isfinite(crown_lo.numpy()).all()


def test_kinked_activations_lines_touch_at_the_kinks():
    """Selu on [-1, 1]: the slope drops at 0 (1.758 -> 1.051), so the upper chord
    must be lifted to pass through (0, 0) exactly; HardSwish on [-4, 4]: the
    interval's minimum is -3/8 at -1.5, and on [-3, 3] the upper line is the chord."""
    l, u = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    selu = Elu(SELU_ALPHA, SELU_GAMMA)
    r = selu.relax(l, u)
    assert r.upper_bias.item() == pytest.approx(0.0, abs=1e-9)  # the line through the corner (0, 0)
    assert r.upper_slope * l + r.upper_bias >= selu.forward(l) - 1e-12
    lo, hi = HardSwish().interval((torch.tensor([-4.0]), torch.tensor([4.0])))
    assert lo.item() == pytest.approx(-0.375, abs=1e-6) and hi.item() == pytest.approx(4.0, abs=1e-5)
    r = HardSwish().relax(torch.tensor([-3.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64))
    assert r.upper_slope.item() == pytest.approx(0.5) and r.upper_bias.item() == pytest.approx(1.5, abs=1e-9)
    lo, hi = Softplus().interval((torch.tensor([-800.0, 50.0], dtype=torch.float64),
                                  torch.tensor([-700.0, 800.0], dtype=torch.float64)))
    assert abs(lo[0].item()) <= 1e-300 and hi[1].item() == pytest.approx(800.0)
