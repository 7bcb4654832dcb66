"""Linear constraints with multipliers (beta-CROWN): sound for any beta >= 0
and after optimization, tighter where the constraints cut."""
from __future__ import annotations

import torch

torch.set_num_threads(1)  # small ops: thread hand-off costs more than it saves

from bounds.constraints import LinearConstraints
from bounds.engine import BoundConfig, compute_bounds
from tests.nets import seeded_relu_net
from tests.test_engine_crown import sample_box

TOL = 1e-5
ALPHA = BoundConfig(method="alpha-crown", alpha_iterations=40)


def feasible_outputs(graph, lower, upper, spec, constraints, count=20000):
    """Spec values ``(N, S)`` at sampled points that satisfy every constraint."""
    points = sample_box(lower, upper, count)[0]
    values = graph.forward(points, keep=True)
    keep = torch.ones(points.shape[0], dtype=torch.bool)
    for c in constraints:
        keep &= (c.violation(values[c.node]) >= 0).all(1)
    assert keep.sum() > 50, "test setup: the constraints must leave feasible samples"
    return values[graph.output_name][keep] @ spec[0].T


def split_constraints(graph, lower, upper, node, neurons, signs):
    """ReLU split decisions ``sign * z_i >= 0`` on ``node``."""
    numel = graph.node(node).numel
    coeffs = torch.zeros(1, len(neurons), numel)
    coeffs[0, torch.arange(len(neurons)), torch.tensor(neurons)] = torch.tensor(signs)
    return LinearConstraints(node, coeffs, torch.zeros(1, len(neurons)))


def halfspace_on_hidden(graph, node_index, direction, offset):
    """A general constraint on the first layer's output equal to the input
    half-space ``direction . x >= offset`` (pulled back through the weights)."""
    layer = graph.nodes[node_index]
    weight, bias = layer.op.weight, layer.op.bias
    w = torch.linalg.lstsq(weight.T, direction.unsqueeze(1)).solution[:, 0]
    const = -offset - w @ bias
    return LinearConstraints(layer.name, w.reshape(1, 1, -1), const.reshape(1, 1))


def test_random_betas_are_sound():
    graph = seeded_relu_net([3, 16, 16, 2], seed=9)
    lower, upper = -0.5 * torch.ones(1, 3), 0.5 * torch.ones(1, 3)
    spec = torch.tensor([[[1.0, -1.0], [0.0, 1.0]]])
    center = graph.forward(torch.zeros(1, 3), keep=True)
    signs = torch.sign(center["fc1"][0, :4]).tolist()
    constraints = [split_constraints(graph, lower, upper, "fc1", [0, 1, 2, 3], signs),
                   halfspace_on_hidden(graph, 0, torch.tensor([1.0, -0.5, 0.2]), -0.2)]
    truth = feasible_outputs(graph, lower, upper, spec, constraints)
    gen = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 10.0):
        betas = [scale * torch.rand(1, 4, 4, generator=gen), scale * torch.rand(1, 4, 1, generator=gen)]
        result = compute_bounds(graph, lower, upper, spec, constraints=constraints, want_upper=True,
                                warm_start={"betas": betas})
        assert (result.lower[0] <= truth.min(0).values + TOL).all(), scale
        assert (result.upper[0] >= truth.max(0).values - TOL).all(), scale
    optimized = compute_bounds(graph, lower, upper, spec, constraints=constraints, want_upper=True, config=ALPHA)
    assert (optimized.lower[0] <= truth.min(0).values + TOL).all()
    assert (optimized.upper[0] >= truth.max(0).values - TOL).all()
    assert [tuple(b.shape) for b in optimized.betas] == [(1, 4, 4), (1, 4, 1)]
    assert all((b >= 0).all() for b in optimized.betas)


def test_split_with_supplied_bounds_and_betas_is_sound():
    """beta-CROWN's setting: the split neuron's box is cut *and* its constraint
    carries a multiplier."""
    graph = seeded_relu_net([4, 12, 12, 3], seed=4)
    lower, upper = -torch.ones(1, 4), torch.ones(1, 4)
    spec = torch.tensor([[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]])
    base = compute_bounds(graph, lower, upper, spec)
    fc1_lower, fc1_upper = base.intermediate["fc1"]
    unstable = ((fc1_lower < 0) & (fc1_upper > 0))[0].nonzero().flatten().tolist()[:2]
    split_lower, split_upper = fc1_lower.clone(), fc1_upper.clone()
    split_lower[0, unstable[0]] = 0.0     # z_a >= 0
    split_upper[0, unstable[1]] = 0.0     # z_b <= 0
    constraints = split_constraints(graph, lower, upper, "fc1", unstable, [1.0, -1.0])
    fc0 = base.intermediate["fc0"]
    result = compute_bounds(graph, lower, upper, spec, config=ALPHA, constraints=constraints,
                            intermediate={"fc0": fc0, "fc1": (split_lower, split_upper)})
    truth = feasible_outputs(graph, lower, upper, spec, [constraints])
    assert (result.lower[0] <= truth.min(0).values + TOL).all()


def test_constraints_tighten_where_they_cut():
    """A constraint on a hidden post-activation node that cuts off the spec's
    minimum: with the multiplier the bound rises to (nearly) the cut level."""
    graph = seeded_relu_net([3, 16, 2], seed=9)
    lower, upper = -0.5 * torch.ones(1, 3), 0.5 * torch.ones(1, 3)
    spec = torch.tensor([[[1.0, -1.0]]])
    out_layer = graph.nodes[-1].op
    # sum(w * relu0) + const = spec . y - level   (w pulls the spec row back)
    level = 0.0
    w = spec[0, 0] @ out_layer.weight
    const = spec[0, 0] @ out_layer.bias - level
    cut = LinearConstraints("relu0", w.reshape(1, 1, -1), const.reshape(1, 1))
    plain = compute_bounds(graph, lower, upper, spec, config=ALPHA)
    cut_result = compute_bounds(graph, lower, upper, spec, config=ALPHA, constraints=cut)
    truth = feasible_outputs(graph, lower, upper, spec, [cut])
    assert plain.lower.item() < level - 0.2  # the cut removes part of the range
    assert cut_result.lower.item() > plain.lower.item() + 0.2
    assert cut_result.lower.item() > level - 0.05
    assert cut_result.lower.item() <= truth.min().item() + TOL


def test_input_halfspace_constraint_tightens_crown():
    """A half-space on the first hidden layer (= on the input): optimized betas
    give a bound at least as good as without, and sound on the feasible part."""
    graph = seeded_relu_net([3, 16, 2], seed=9)
    lower, upper = -0.5 * torch.ones(1, 3), 0.5 * torch.ones(1, 3)
    spec = torch.tensor([[[1.0, -1.0]]])
    points = sample_box(lower, upper, 20000)[0]
    outputs = graph.forward(points) @ spec[0].T
    worst = points[outputs[:, 0].argmin()]
    direction = -worst / worst.norm()
    cut = halfspace_on_hidden(graph, 0, direction, float(direction @ worst) + 0.5)
    plain = compute_bounds(graph, lower, upper, spec, config=ALPHA)
    cut_result = compute_bounds(graph, lower, upper, spec, config=ALPHA, constraints=cut)
    truth = feasible_outputs(graph, lower, upper, spec, [cut])
    assert cut_result.lower.item() <= truth.min().item() + TOL
    assert cut_result.betas[0].item() > 0
    assert cut_result.lower.item() > plain.lower.item() - 0.02
