"""IBP / CROWN / alpha-CROWN on hand-built ReLU graphs: soundness by sampling,
ordering of the methods, DAG fan-out, chunking, supplied intermediate bounds."""
from __future__ import annotations

import torch

torch.set_num_threads(1)  # small ops: thread hand-off costs more than it saves
from hypothesis import given, settings, strategies as st

from bounds.engine import BoundConfig, compute_bounds
from bounds.graph import Graph, Node
from bounds.ops.add import Add2
from bounds.ops.linear import Linear
from bounds.ops.relu import ReLU
from tests.nets import seeded_relu_net

TOL = 1e-5


def residual_net(width: int, seed: int) -> Graph:
    """x -> fc0 -> relu0 -> fc1 -> relu1 -> (+ relu0) -> fc2; relu0 fans out."""
    gen = torch.Generator().manual_seed(seed)

    def lin(i, o):
        return Linear(torch.randn(o, i, generator=gen) / i ** 0.5, 0.1 * torch.randn(o, generator=gen))

    nodes = [
        Node("fc0", lin(4, width), ["x"], (width,)),
        Node("relu0", ReLU(), ["fc0"], (width,)),
        Node("fc1", lin(width, width), ["relu0"], (width,)),
        Node("relu1", ReLU(), ["fc1"], (width,)),
        Node("res", Add2((width,), (width,)), ["relu1", "relu0"], (width,)),
        Node("relu2", ReLU(), ["res"], (width,)),
        Node("fc2", lin(width, 3), ["relu2"], (3,)),
    ]
    return Graph("x", (4,), nodes, "fc2")


def sample_box(lower: torch.Tensor, upper: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``(B, count, *shape)`` points: uniform inside plus random vertices."""
    gen = torch.Generator().manual_seed(seed)
    shape = (lower.shape[0], count) + tuple(lower.shape[1:])
    t = torch.rand(shape, generator=gen, dtype=lower.dtype)
    corners = count // 4
    t[:, :corners] = torch.randint(0, 2, t[:, :corners].shape, generator=gen).to(lower.dtype)
    return lower.unsqueeze(1) + (upper - lower).unsqueeze(1) * t


def sampled_range(graph: Graph, lower, upper, spec, count=2000, seed=0):
    points = sample_box(lower, upper, count, seed)
    batch = points.shape[0]
    outputs = graph.forward(points.reshape((-1,) + tuple(lower.shape[1:]))).reshape(batch, count, -1)
    values = torch.einsum("bsn,bkn->bks", spec.expand(batch, -1, -1), outputs)
    return values.min(1).values, values.max(1).values


@settings(max_examples=12, deadline=None)
@given(depth=st.integers(1, 3), width=st.integers(2, 12), batch=st.integers(1, 3),
       seed=st.integers(0, 10_000), eps=st.floats(0.05, 1.0))
def test_methods_sound_and_ordered(depth, width, batch, seed, eps):
    graph = seeded_relu_net([3] + [width] * depth + [4], seed)
    gen = torch.Generator().manual_seed(seed + 1)
    center = torch.randn(batch, 3, generator=gen)
    lower, upper = center - eps, center + eps
    spec = torch.randn(1, 5, 4, generator=gen)
    true_min, true_max = sampled_range(graph, lower, upper, spec)
    results = {m: compute_bounds(graph, lower, upper, spec, want_upper=True,
                                 config=BoundConfig(method=m, alpha_iterations=8))
               for m in ("ibp", "crown", "alpha-crown")}
    for method, result in results.items():
        assert (result.lower <= true_min + TOL).all(), method
        assert (result.upper >= true_max - TOL).all(), method
    ibp, crown, alpha = results["ibp"], results["crown"], results["alpha-crown"]
    assert (crown.lower >= ibp.lower - TOL).all() and (crown.upper <= ibp.upper + TOL).all()
    assert (alpha.lower >= crown.lower - TOL).all() and (alpha.upper <= crown.upper + TOL).all()


def test_crown_exact_on_affine_graph():
    graph = seeded_relu_net([5, 7, 3], seed=3)
    graph = Graph("x", (5,), [n for n in graph.nodes if n.op.is_linear][:1], "fc0")
    lower, upper = -torch.ones(1, 5), torch.ones(1, 5)
    spec = torch.randn(1, 4, 7)
    result = compute_bounds(graph, lower, upper, spec, want_upper=True)
    weight, bias = graph.nodes[0].op.weight, graph.nodes[0].op.bias
    composed = spec[0] @ weight  # (4, 5)
    expected_lower = composed.abs().sum(1) * -1 + spec[0] @ bias
    assert torch.allclose(result.lower[0], expected_lower, atol=1e-5)
    assert torch.allclose(result.upper[0], composed.abs().sum(1) + spec[0] @ bias, atol=1e-5)


def test_crown_tighter_than_ibp_on_deep_net():
    graph = seeded_relu_net([4, 30, 30, 30, 2], seed=7)
    lower, upper = -0.3 * torch.ones(1, 4), 0.3 * torch.ones(1, 4)
    spec = torch.eye(2).unsqueeze(0)
    ibp = compute_bounds(graph, lower, upper, spec, config=BoundConfig(method="ibp"), want_upper=True)
    crown = compute_bounds(graph, lower, upper, spec, want_upper=True)
    alpha = compute_bounds(graph, lower, upper, spec, want_upper=True,
                           config=BoundConfig(method="alpha-crown", alpha_iterations=30))
    true_min, true_max = sampled_range(graph, lower, upper, spec)
    width = lambda r: (r.upper - r.lower).sum().item()  # noqa: E731
    assert width(crown) < 0.5 * width(ibp)
    assert width(alpha) < width(crown)
    assert (alpha.lower <= true_min + TOL).all() and (alpha.upper >= true_max - TOL).all()


def test_residual_fan_out_sound():
    graph = residual_net(10, seed=11)
    lower, upper = -torch.ones(2, 4) * 0.5, torch.ones(2, 4) * 0.5
    lower[1] += 0.3
    upper[1] += 0.3
    spec = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(2))
    true_min, true_max = sampled_range(graph, lower, upper, spec, count=4000)
    for method in ("ibp", "crown", "alpha-crown"):
        result = compute_bounds(graph, lower, upper, spec, want_upper=True,
                                config=BoundConfig(method=method, optimize_intermediate=True))
        assert (result.lower <= true_min + TOL).all(), method
        assert (result.upper >= true_max - TOL).all(), method
        gap = (true_min - result.lower).max().item()
        assert gap < 10.0, method  # bounded, not vacuous
    assert set(result.intermediate) >= {"fc0", "fc1", "res", "fc2"}


def test_chunking_gives_same_bounds():
    graph = seeded_relu_net([6, 40, 40, 5], seed=5)
    lower, upper = -0.5 * torch.ones(2, 6), 0.5 * torch.ones(2, 6)
    spec = torch.randn(1, 9, 5)
    whole = compute_bounds(graph, lower, upper, spec, want_upper=True)
    tiny = compute_bounds(graph, lower, upper, spec, want_upper=True,
                          config=BoundConfig(max_coeff_elements=2000))
    assert torch.allclose(whole.lower, tiny.lower, atol=1e-5)
    assert torch.allclose(whole.upper, tiny.upper, atol=1e-5)
    assert tiny.stats["backward_passes"] > whole.stats["backward_passes"]


def test_supplied_intermediate_bounds_are_used_and_sound():
    """A split z_i >= 0 given as the box [max(l, 0), u] for relu0's input."""
    graph = seeded_relu_net([3, 16, 16, 2], seed=9)
    lower, upper = -torch.ones(1, 3), torch.ones(1, 3)
    spec = torch.tensor([[[1.0, -1.0]]])
    base = compute_bounds(graph, lower, upper, spec, want_upper=True)
    fc0_lower, fc0_upper = base.intermediate["fc0"]
    unstable = ((fc0_lower < 0) & (fc0_upper > 0))[0].nonzero().flatten()
    assert len(unstable) > 0
    neuron = int(unstable[0])
    split_lower = fc0_lower.clone()
    split_lower[0, neuron] = 0.0
    split = compute_bounds(graph, lower, upper, spec, want_upper=True,
                           intermediate={"fc0": (split_lower, fc0_upper)})
    assert split.intermediate["fc0"][0][0, neuron] == 0.0
    points = sample_box(lower, upper, 20000)[0]
    values = graph.forward(points, keep=True)
    keep = values["fc0"][:, neuron] >= 0
    out = values[graph.output_name][keep] @ spec[0].T
    assert (split.lower[0] <= out.min(0).values + TOL).all()
    assert (split.upper[0] >= out.max(0).values - TOL).all()


def test_float64_and_spec_offset():
    graph = seeded_relu_net([3, 8, 2], seed=1, dtype=torch.float64)
    lower, upper = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    spec = torch.tensor([[[1.0, 0.0]]])
    plain = compute_bounds(graph, lower, upper, spec)
    shifted = compute_bounds(graph, lower, upper, spec, torch.tensor([[2.5]]))
    assert plain.lower.dtype == torch.float64
    assert torch.allclose(shifted.lower, plain.lower - 2.5)


def test_affine_prefix_box_is_exact():
    """x (3) -> Linear -> Linear (40) -> ReLU: the second layer's box comes from
    forward evaluation (3 inputs < 80 rows) and equals the exact affine box."""
    gen = torch.Generator().manual_seed(4)
    first = Linear(torch.randn(10, 3, generator=gen), torch.randn(10, generator=gen))
    second = Linear(torch.randn(40, 10, generator=gen), torch.randn(40, generator=gen))
    last = Linear(torch.randn(2, 40, generator=gen), torch.zeros(2))
    graph = Graph("x", (3,), [Node("a", first, ["x"], (10,)), Node("b", second, ["a"], (40,)),
                              Node("r", ReLU(), ["b"], (40,)), Node("out", last, ["r"], (2,))], "out")
    lower, upper = -torch.rand(2, 3, generator=gen), torch.rand(2, 3, generator=gen)
    result = compute_bounds(graph, lower, upper, torch.eye(2).unsqueeze(0), want_upper=True)
    jac = second.weight @ first.weight
    const = second.weight @ first.bias + second.bias
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    exact_lower = center @ jac.T + const - radius @ jac.abs().T
    exact_upper = center @ jac.T + const + radius @ jac.abs().T
    assert result.stats["backward_passes"] == 1  # only the spec pass: "b" came from forward evaluation
    box_lower, box_upper = result.intermediate["b"]
    assert torch.allclose(box_lower, exact_lower, atol=1e-4)
    assert torch.allclose(box_upper, exact_upper, atol=1e-4)
    true_min, true_max = sampled_range(graph, lower, upper, torch.eye(2).unsqueeze(0))
    assert (result.lower <= true_min + TOL).all() and (result.upper >= true_max - TOL).all()
