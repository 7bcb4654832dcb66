"""LP/MIP oracle: checked against exact enumeration of activation regions.

The oracle enumerates the linear regions of a tiny ReLU net by depth-first
search over activation patterns, pruning infeasible prefixes with scipy's
``linprog``; on each region the network is affine, so the exact minimum of a
linear objective (or of the worst clause row) is one LP per region.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linprog

from bounds.graph import Graph, Node
from bounds.lp import (UnsupportedForLP, gurobi_available, interval_intermediate_bounds, lp_bounds,
                       lp_intermediate_bounds, mip_minimize, mip_minimum, mip_verdict)
from bounds.lp_model import LinearProgram
from bounds.ops.activations import Sigmoid
from bounds.ops.base import Operator
from bounds.ops.linear import Linear
from bounds.ops.relu import ReLU
from tests.nets import seeded_relu_net

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"

torch.set_num_threads(1)


# ------------------------------------------------------------------ tiny nets
def make_mlp(widths: list[int], seed: int) -> tuple[Graph, list[tuple[np.ndarray, np.ndarray]]]:
    """Linear/ReLU chain with random weights; also returns the float64 layers."""
    graph = seeded_relu_net(widths, seed, bias_scale=0.5, fan_in_scaled=False)
    layers = [(node.op.weight.double().numpy(), node.op.bias.double().numpy())
              for node in graph.nodes if isinstance(node.op, Linear)]
    return graph, layers


def linear_regions(layers, lower, upper):
    """Every activation region as ``(A_ub, b_ub, out_A, out_b)``: on the polytope
    ``A_ub x <= b_ub`` within the box the output is ``out_A x + out_b``."""
    bounds = list(zip(lower, upper))
    regions = []

    def feasible(A_ub, b_ub):
        res = linprog(np.zeros(len(lower)), A_ub=np.array(A_ub), b_ub=np.array(b_ub), bounds=bounds,
                      method="highs")
        return res.status == 0

    def descend(k, cur_A, cur_b, A_ub, b_ub):
        weight, bias = layers[k]
        pre_A, pre_b = weight @ cur_A, weight @ cur_b + bias
        if k == len(layers) - 1:
            regions.append((np.array(A_ub).reshape(-1, len(lower)), np.array(b_ub), pre_A, pre_b))
            return

        def neuron(j, mask, A_ub, b_ub):
            if j == len(pre_b):
                descend(k + 1, pre_A * mask[:, None], pre_b * mask, A_ub, b_ub)
                return
            for active in (1.0, 0.0):
                sign = -1.0 if active else 1.0  # active: -z <= 0, inactive: z <= 0
                rows, rhs = A_ub + [sign * pre_A[j]], b_ub + [-sign * pre_b[j]]
                if feasible(rows, rhs):
                    neuron(j + 1, np.concatenate([mask[:j], [active], mask[j + 1:]]), rows, rhs)

        neuron(0, np.ones(len(pre_b)), A_ub, b_ub)

    descend(0, np.eye(len(lower)), np.zeros(len(lower)), [], [])
    return regions


def region_minimum(regions, lower, upper, objective):
    """Exact minimum of ``objective @ output`` over the box."""
    best = np.inf
    for A_ub, b_ub, out_A, out_b in regions:
        res = linprog(objective @ out_A, A_ub=A_ub if len(A_ub) else None, b_ub=b_ub if len(b_ub) else None,
                      bounds=list(zip(lower, upper)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + objective @ out_b)
    return best


def region_worst_row_minimum(regions, lower, upper, clause, offset):
    """Exact ``min_x max_j (C_j f(x) - d_j)`` over the box (epigraph LP per region)."""
    n = len(lower)
    best = np.inf
    for A_ub, b_ub, out_A, out_b in regions:
        rows = np.hstack([clause @ out_A, -np.ones((len(clause), 1))])
        rhs = offset - clause @ out_b
        if len(A_ub):
            rows = np.vstack([rows, np.hstack([A_ub, np.zeros((len(A_ub), 1))])])
            rhs = np.concatenate([rhs, b_ub])
        cost = np.zeros(n + 1)
        cost[-1] = 1.0
        res = linprog(cost, A_ub=rows, b_ub=rhs, bounds=list(zip(lower, upper)) + [(None, None)],
                      method="highs")
        if res.status == 0:
            best = min(best, res.fun)
    return best


NETS = [([2, 6, 3], 0), ([2, 5, 4, 2], 1), ([3, 4, 3, 2], 2), ([2, 4, 3, 3, 2], 3)]


@pytest.fixture(scope="module", params=NETS, ids=lambda p: f"{p[0]}-seed{p[1]}")
def tiny(request):
    widths, seed = request.param
    graph, layers = make_mlp(widths, seed)
    lower = -np.ones(widths[0])
    upper = np.ones(widths[0])
    lower[0] = -0.5
    return graph, layers, lower, upper, linear_regions(layers, lower, upper)


# ---------------------------------------------------------------------- tests
def test_mip_minimum_equals_enumeration_and_lp_is_below(tiny):
    graph, layers, lower, upper, regions = tiny
    n_out = layers[-1][0].shape[0]
    specs = np.vstack([np.eye(n_out)[:2], np.random.default_rng(0).normal(size=(1, n_out))])
    lp = lp_bounds(graph, torch.tensor(lower), torch.tensor(upper), torch.tensor(specs))
    for s, spec in enumerate(specs):
        exact = region_minimum(regions, lower, upper, spec)
        result = mip_minimize(graph, lower, upper, spec)
        assert result.status == "optimal"
        assert abs(result.value - exact) < 1e-6
        assert abs(result.witness_value - exact) < 1e-6  # a real input attains it
        assert lp[s] <= exact + 1e-9
    # Big-M from interval bounds gives the same exact answer.
    assert abs(mip_minimum(graph, lower, upper, specs[0], bounds="interval")
               - region_minimum(regions, lower, upper, specs[0])) < 1e-6


def test_lp_intermediate_bounds_enclose_samples_and_are_tight(tiny):
    graph, layers, lower, upper, _ = tiny
    lo32, hi32 = torch.tensor(lower, dtype=torch.float32)[None], torch.tensor(upper, dtype=torch.float32)[None]
    lp_bnds = lp_intermediate_bounds(graph, lo32, hi32)
    ibp = interval_intermediate_bounds(graph, lo32, hi32)
    gen = torch.Generator().manual_seed(0)
    xs = lo32 + (hi32 - lo32) * torch.rand(4000, len(lower), generator=gen)
    corners = torch.cartesian_prod(*[torch.tensor([lo, hi]) for lo, hi in zip(lower, upper)]).float()
    values = graph.forward(torch.cat([xs, corners]), keep=True)
    for name, (lo, hi) in lp_bnds.items():
        assert lo.dtype == torch.float32 and lo.shape == (1, *graph.node(name).shape)
        seen = values[name]  # float32 forward: allow its rounding
        assert torch.all(seen >= lo - 1e-5) and torch.all(seen <= hi + 1e-5)
        assert torch.all(lo >= ibp[name][0]) and torch.all(hi <= ibp[name][1])
    # The first layer's LP bounds are exact: attained at a corner of the box.
    first = values["fc0"][-len(corners):]
    assert torch.allclose(first.min(0).values, lp_bnds["fc0"][0][0], atol=1e-5)
    assert torch.allclose(first.max(0).values, lp_bnds["fc0"][1][0], atol=1e-5)


def test_lp_bound_depends_on_intermediate_bounds(tiny):
    graph, layers, lower, upper, _ = tiny
    spec = np.eye(layers[-1][0].shape[0])
    tight = lp_intermediate_bounds(graph, lower, upper)
    loose = interval_intermediate_bounds(graph, lower, upper)
    with_tight = lp_bounds(graph, lower, upper, spec, tight)
    assert np.all(lp_bounds(graph, lower, upper, spec, loose) <= with_tight + 1e-9)
    assert np.allclose(lp_bounds(graph, lower, upper, spec), with_tight, atol=1e-6)


def test_mip_verdict_matches_enumeration(tiny):
    graph, layers, lower, upper, regions = tiny
    n_out = layers[-1][0].shape[0]
    rng = np.random.default_rng(1)
    verdicts = set()
    for trial in range(4):
        clause = rng.normal(size=(2, n_out))
        centre = clause @ graph.forward(torch.zeros(1, len(lower)))[0].double().numpy()
        offset = centre + rng.normal(size=2) * 2.0
        exact = region_worst_row_minimum(regions, lower, upper, clause, offset)
        if abs(exact) < 1e-5:
            continue  # boundary case: either answer is defensible
        verdict, witness = mip_verdict(graph, lower, upper, clause, offset, time_limit=20)
        assert verdict == ("sat" if exact < 0 else "unsat")
        verdicts.add(verdict)
        if verdict == "sat":
            assert np.all(witness.numpy() >= lower) and np.all(witness.numpy() <= upper)
            output = graph.forward(witness.float())[0].double().numpy()
            assert np.max(clause @ output - offset) <= 1e-5
    assert verdicts  # the loop decided something


class _Add(Operator):
    """Residual sum of two variables (stand-in for the importer's Add)."""

    op_type = "Add"
    num_inputs = 2

    def forward(self, x, y):
        return x + y


class _Conv1d(Operator):
    """A 1-D convolution with padding, checks the identity-basis evaluation."""

    op_type = "Conv"

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, padding=1)


def test_dag_with_conv_and_residual_add():
    """x -> conv -> relu -> flatten-free linear + residual skip from the relu."""
    gen = torch.Generator().manual_seed(5)
    nodes = [
        Node("conv", _Conv1d(torch.randn(2, 1, 3, generator=gen), torch.randn(2, generator=gen)), ["x"], (2, 3)),
        Node("r1", ReLU(), ["conv"], (2, 3)),
        Node("conv2", _Conv1d(torch.randn(2, 2, 3, generator=gen), torch.randn(2, generator=gen)), ["r1"], (2, 3)),
        Node("sum", _Add(), ["conv2", "r1"], (2, 3)),
        Node("r2", ReLU(), ["sum"], (2, 3)),
        Node("out", _Add(), ["r2", "conv"], (2, 3)),
    ]
    graph = Graph("x", (1, 3), nodes, "out")
    lower, upper = -torch.ones(1, 1, 3), torch.ones(1, 1, 3)
    spec = torch.randn(3, 6, generator=gen)
    lp = lp_bounds(graph, lower, upper, spec)
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 3).reshape(8, 1, 3)
    xs = torch.cat([lower + 2 * torch.rand(20000, 1, 3, generator=gen), corners])
    sampled = (graph.forward(xs).reshape(-1, 6) @ spec.T).min(0).values.double().numpy()
    for s in range(3):
        result = mip_minimize(graph, lower, upper, spec[s])
        assert lp[s] <= result.value + 1e-9
        assert result.value <= sampled[s] + 1e-6
        attained = graph.forward(result.witness.float()).reshape(6) @ spec[s]  # our own forward pass
        assert abs(float(attained) - result.value) < 1e-4
    bounds = lp_intermediate_bounds(graph, lower, upper)
    assert set(bounds) == {"conv", "sum"} and bounds["sum"][0].shape == (1, 2, 3)


def test_unsupported_op_has_one_line_error():
    graph = Graph("x", (2,), [Node("fc", Linear(torch.eye(2)), ["x"], (2,)),
                              Node("sig", Sigmoid(), ["fc"], (2,))], "sig")
    with pytest.raises(NotImplementedError) as info:
        lp_bounds(graph, -torch.ones(1, 2), torch.ones(1, 2), torch.eye(2))
    assert isinstance(info.value, UnsupportedForLP)
    assert "Sigmoid" in str(info.value) and "\n" not in str(info.value)


def test_dual_bound_is_valid_for_any_multipliers():
    """min x0 + x1 s.t. x0 + 2 x1 >= 2 on [0, 10]^2 has optimum 1."""
    program = LinearProgram()
    program.add_columns(np.zeros(2), np.full(2, 10.0))
    from scipy.sparse import csr_matrix
    program.add_rows(csr_matrix(np.array([[1.0, 2.0]])), 2.0, np.inf)
    cost = np.ones(2)
    assert program.minimize(cost).bound == pytest.approx(1.0, abs=1e-12)
    assert program.dual_bound(cost, None) == 0.0          # box bound alone
    assert program.dual_bound(cost, np.array([0.2])) == pytest.approx(0.4)
    assert program.dual_bound(cost, np.array([-3.0])) == 0.0  # wrong sign clipped to 0


@pytest.mark.skipif(gurobi_available(), reason="gurobi licensed here")
def test_gurobi_without_licence_is_a_clear_error():
    graph, _ = make_mlp([2, 3, 1], 0)
    with pytest.raises(RuntimeError, match="gurobi"):
        lp_bounds(graph, -torch.ones(1, 2), torch.ones(1, 2), torch.eye(1), solver="gurobi")


def test_acasxu_lp_bound_below_sampled_minimum():
    load_onnx = pytest.importorskip("verifier.onnx_import").load_onnx
    graph = load_onnx(BENCHMARKS / "2022_acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx")
    centre = torch.tensor([0.2, -0.1, 0.05, 0.3, 0.2]).reshape(1, *graph.input_shape)
    lower, upper = centre - 0.03, centre + 0.03
    spec = torch.eye(graph.output_numel)
    spec[1:, 0] = -1.0  # rows y_j - y_0, and y_0 itself
    lp = lp_bounds(graph, lower, upper, spec)
    gen = torch.Generator().manual_seed(0)
    xs = lower + (upper - lower) * torch.rand(4000, *graph.input_shape, generator=gen)
    outputs = graph.forward(xs).reshape(4000, -1).double()
    sampled = (outputs @ spec.double().T).min(0).values.numpy()
    assert np.all(lp <= sampled + 1e-6)
    assert np.all(sampled - lp < 1.0)  # a small box: the relaxation is not vacuous
    # With CROWN's own intermediate bounds, the LP optimum is at least CROWN's bound.
    engine = pytest.importorskip("bounds.engine")
    crown = engine.compute_bounds(graph, lower, upper, spec, config=engine.BoundConfig(method="crown"))
    lp_same = lp_bounds(graph, lower, upper, spec, crown.intermediate)
    assert np.all(crown.lower[0].double().numpy() <= lp_same + 1e-5)
    assert np.all(lp_same <= sampled + 1e-6)
