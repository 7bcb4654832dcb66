"""Forward-mode linear bounds (bounds/forward.py): every box encloses sampled
values of every node, on random graphs mixing all rule kinds and on real
low-input-dimension nets; the pre-pass makes the cgan instance's intermediate
bounds tighter and cheaper; zero-width inputs stay points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bounds.crown import Propagator
from bounds.engine import BoundConfig, compute_bounds, forward_sweep
from bounds.forward import concretize, forward_boxes, free_inputs
from bounds.graph import Graph, Node
from bounds.ibp import interval_bounds
from bounds.ops.activations import Pow, Sigmoid, Tanh
from bounds.ops.add import Add2
from bounds.ops.conv import Conv, ConvTranspose
from bounds.ops.elementwise_affine import ElementwiseAffine
from bounds.ops.linear import Linear
from bounds.ops.pooling_max import MaxPool
from bounds.ops.relu import ReLU
from bounds.ops.shape_ops import AxisSelect, Concat, Reshape
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
torch.set_num_threads(1)


def mixed_graph(seed: int) -> Graph:
    """4 inputs -> Linear -> ReLU -> Reshape (2,2,2) -> ConvTranspose -> Affine(mixed signs)
    -> Tanh -> Conv -> MaxPool (no forward rule) -> Reshape -> Concat(with a slice) -> Add2(x, -relu(x))
    -> square -> Sigmoid -> Linear."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    nodes = [
        Node("fc", Linear(r(8, 4), r(8)), ["x"], (8,)),
        Node("relu", ReLU(), ["fc"], (8,)),
        Node("img", Reshape((2, 2, 2)), ["relu"], (2, 2, 2)),
        Node("up", ConvTranspose(r(2, 3, 2, 2), r(3), (2, 2), (0, 0, 0, 0), (1, 1), 1, (0, 0)), ["img"], (3, 4, 4)),
        Node("aff", ElementwiseAffine(r(3, 1, 1), r(3, 1, 1), (3, 4, 4)), ["up"], (3, 4, 4)),
        Node("tanh", Tanh(), ["aff"], (3, 4, 4)),
        Node("conv", Conv(r(4, 3, 3, 3), r(4), (1, 1), (1, 1, 1, 1), (1, 1), 1, (3, 4, 4)), ["tanh"], (4, 4, 4)),
        Node("pool", MaxPool([2, 2], [2, 2], [0, 0, 0, 0]), ["conv"], (4, 2, 2)),
        Node("flat", Reshape((16,)), ["pool"], (16,)),
        Node("head", AxisSelect((16,), [(0, slice(0, 6))]), ["flat"], (6,)),
        Node("cat", Concat(0, [None, torch.ones(2), None], [16, 2, 6]), ["flat", "head"], (24,)),
        Node("mix", Add2((24,), (24,), 1.0, -0.5), ["cat", "relu_cat"], (24,)),
        Node("sq", Pow(2.0), ["mix"], (24,)),      # negative slopes left of 0
        Node("sig", Sigmoid(), ["sq"], (24,)),
        Node("out", Linear(r(3, 24), r(3)), ["sig"], (3,)),
    ]
    nodes.insert(11, Node("relu_cat", ReLU(), ["cat"], (24,)))
    return Graph("x", (4,), nodes, "out")


def _samples(lower, upper, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, *lower.shape[1:], generator=g)
    t[: n // 4] = t[: n // 4].round()   # corners
    return lower + t * (upper - lower)


@pytest.mark.parametrize("seed", range(6))
def test_forward_boxes_enclose_every_node_of_a_mixed_graph(seed):
    graph = mixed_graph(seed)
    centre = torch.randn(1, 4, generator=torch.Generator().manual_seed(100 + seed))
    for radius in (1e-3, 0.1, 1.0):
        lower, upper = centre - radius, centre + radius
        boxes = forward_boxes(graph, lower, upper)
        with torch.no_grad():
            values = graph.forward(_samples(lower, upper, 3000, seed), keep=True)
        for node in graph.nodes:
            lo, up = boxes[node.name]
            v = values[node.name]
            slack = 1e-5 * (1 + v.abs())
            assert (v >= lo - slack).all() and (v <= up + slack).all(), (seed, radius, node.name)


def test_forward_is_exact_on_affine_chains_and_tighter_than_ibp_after_relu():
    graph = mixed_graph(0)
    lower, upper = torch.full((1, 4), -0.05), torch.full((1, 4), 0.05)
    boxes = forward_boxes(graph, lower, upper)
    ibp = compute_bounds(graph, lower, upper, torch.eye(3).unsqueeze(0), config=BoundConfig(method="ibp"))
    # the first layer is affine in the input: IBP is exact, forward keeps it
    lo, up = boxes["fc"]
    with torch.no_grad():
        corners = graph.forward(_samples(lower, upper, 4096), keep=True)["fc"]
    assert torch.allclose(lo[0], corners.min(0).values, atol=1e-2) and torch.allclose(up[0], corners.max(0).values,
                                                                                        atol=1e-2)
    out_lo, out_up = boxes["out"]
    ibp_lo, ibp_up = ibp.intermediate["out"]
    assert (out_up - out_lo).sum() < 0.9 * (ibp_up - ibp_lo).sum()


def test_zero_width_inputs_are_not_free_and_point_nodes_stay_points():
    graph = mixed_graph(1)
    lower = torch.tensor([[0.1, -0.2, 0.3, 0.0]])
    upper = torch.tensor([[0.1, -0.2, 0.3, 0.5]])
    assert free_inputs(lower, upper).tolist() == [3]
    point = forward_boxes(graph, lower, lower.clone())
    ibp = interval_bounds(graph, lower, lower.clone())
    points = 0
    for name, (lo, up) in point.items():
        exact = ibp[name][0] == ibp[name][1]
        points += int(exact.sum())
        # where IBP is a point the forward box (a widened copy) leaves it one
        assert torch.equal(lo[exact], up[exact]) and torch.equal(lo[exact], ibp[name][0][exact]), name
    assert points >= 40


def test_concretize_is_the_box_of_the_forms():
    lower_forms = torch.tensor([[[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]])   # B=1, K=2, shape (2,)
    upper_forms = lower_forms + torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1)
    lo, up = concretize((lower_forms, upper_forms))
    assert torch.allclose(lo, torch.tensor([[1.5, -1.0]]), atol=1e-5)
    assert torch.allclose(up, torch.tensor([[5.5, 4.0]]), atol=1e-5)


def test_cgan_pre_pass_is_sound_tighter_and_needs_fewer_backward_rows():
    graph = load_onnx(str(BENCHMARKS / "2023_cgan/onnx/cGAN_imgSz32_nCh_1.onnx.gz"))
    spec = parse_vnnlib(str(BENCHMARKS / "2023_cgan/vnnlib/"
                            "cGAN_imgSz32_nCh_1_prop_3_input_eps_0.020_output_eps_0.025.vnnlib"))
    box = spec.properties[0].box
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.tensor(box.lower, dtype=torch.float32).reshape(shape)
    upper = torch.tensor(box.upper, dtype=torch.float32).reshape(shape)
    assert forward_sweep(graph, lower, upper) is not None     # 4 free inputs: the sweep pays
    reference = forward_boxes(graph, lower, upper)
    with torch.no_grad():
        values = graph.forward(_samples(lower, upper, 500), keep=True)
    prop = Propagator(graph, lower, upper)
    hybrid, hybrid_rows = prop.intermediate_bounds(forward=forward_sweep(graph, lower, upper))
    plain_rows = Propagator(graph, lower, upper).select_rows
    tighter = 0
    for name in prop.needs_bounds:
        lo, up = hybrid[name]
        v = values[name]
        assert (v >= lo - 1e-4).all() and (v <= up + 1e-4).all(), name
        forward_lo, forward_up = reference[name]
        # tighter in total than forward forms alone (not per neuron: CROWN's
        # default slopes are not monotone in the boxes)
        assert (up - lo).sum() <= (forward_up - forward_lo).sum() * (1 + 1e-6), name
    # the unstable neurons left for backward passes: far fewer than IBP leaves
    ibp = compute_bounds(graph, lower, upper, torch.ones(1, 1, 1), config=BoundConfig(method="ibp"))
    for name, rows in hybrid_rows.items():
        ibp_box = ibp.intermediate[name]
        tighter += rows.index.numel() < plain_rows(name, ibp_box).index.numel()
    assert tighter >= 3


def test_pre_pass_only_where_backward_passes_are_expensive():
    graph = mixed_graph(2)
    lower, upper = torch.zeros(1, 4), torch.ones(1, 4)
    on = BoundConfig(forward_reference="on")
    assert forward_sweep(graph, lower, upper, config=on) is not None
    assert forward_sweep(graph, lower, upper) is None     # a tiny net: backward passes are cheap
    cheap = BoundConfig(forward_min_backward=0, forward_min_ratio=0)
    assert forward_sweep(graph, lower, upper, config=cheap) is not None
    assert forward_sweep(graph, lower, upper, config=BoundConfig(forward_min_backward=0, forward_min_ratio=0,
                                                                     forward_limit=10)) is None
    full = forward_boxes(graph, lower, upper)
    given = {n.inputs[0]: full[n.inputs[0]] for n in graph.nodes if not n.op.is_linear}
    assert forward_sweep(graph, lower, upper, given, on) is None   # BaB supplies every relaxed box
    acas = load_onnx(str(BENCHMARKS / "2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx"))
    assert forward_sweep(acas, torch.zeros(1, *acas.input_shape), torch.ones(1, *acas.input_shape)) is None
    crown_on = compute_bounds(graph, lower, upper, torch.eye(3).unsqueeze(0), want_upper=True, config=on)
    crown_off = compute_bounds(graph, lower, upper, torch.eye(3).unsqueeze(0), want_upper=True,
                               config=BoundConfig(forward_reference="off"))
    assert (crown_on.lower >= crown_off.lower - 1e-5).all() and (crown_on.upper <= crown_off.upper + 1e-5).all()
    assert np.isfinite(crown_on.lower.numpy()).all()
