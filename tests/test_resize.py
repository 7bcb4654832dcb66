"""ONNX Resize/Upsample (bounds/ops/resize.py): nearest and linear modes equal
onnxruntime for every coordinate mode, scales up and down and explicit sizes;
the linear map's backward is its adjoint; bounds enclose sampled outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine import BoundConfig, compute_bounds
from bounds.ops.base import BackwardContext
from bounds.ops.resize import AxisInterpolate, linear_weights, source_coordinates
from verifier.onnx_import import check_against_onnxruntime, load_onnx

torch.set_num_threads(1)


def _resize_model(mode: str, coord: str, scales=None, sizes=None, shape=(1, 2, 3, 4)) -> onnx.ModelProto:
    inputs = ["x", "", "scales"] if sizes is None else ["x", "", "", "sizes"]
    inits = [numpy_helper.from_array(np.asarray(scales, np.float32), "scales")] if sizes is None else \
        [numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes")]
    out = [1, 2] + ([int(np.floor(shape[i] * scales[i])) for i in (2, 3)] if sizes is None else list(sizes[2:]))
    node = helper.make_node("Resize", inputs, ["r"], mode=mode, coordinate_transformation_mode=coord)
    flat = helper.make_node("Flatten", ["r"], ["y"])
    graph = helper.make_graph([node, flat], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, int(np.prod(out))])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


CASES = [(mode, coord, scales, sizes)
         for mode in ("linear", "nearest")
         for coord in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
         for scales, sizes in (([1, 1, 2, 2], None), ([1, 1, 0.5, 1.5], None), (None, [1, 2, 5, 3]))]


@pytest.mark.parametrize("mode,coord,scales,sizes", CASES)
def test_resize_matches_onnxruntime(mode, coord, scales, sizes):
    model = _resize_model(mode, coord, scales, sizes)
    graph = load_onnx(model)
    assert check_against_onnxruntime(graph, model, -np.ones(24) * 3, np.ones(24) * 3, num_points=16) < 1e-5


def test_linear_weights_are_convex_combinations_with_edge_padding():
    src = source_coordinates(8, 3, 8 / 3, "half_pixel")
    weights = linear_weights(src, 3)
    assert torch.allclose(weights.sum(1), torch.ones(8, dtype=torch.float64))
    assert (weights >= 0).all()
    assert weights[0, 0] == 1.0 and weights[-1, -1] == 1.0   # the borders read the edge value only


def test_backward_is_the_adjoint_and_bounds_enclose_samples():
    rng = torch.Generator().manual_seed(0)
    op = AxisInterpolate((1, 2, 3, 4), [(2, linear_weights(source_coordinates(6, 3, 2.0, "half_pixel"), 3)),
                                        (3, linear_weights(source_coordinates(3, 4, 0.75, "align_corners"), 4))])
    x = torch.randn(2, 1, 2, 3, 4, generator=rng)
    A = torch.randn(2, 5, 1, 2, 6, 3, generator=rng)
    y = op.forward(x)
    (A_in,), bias = op.backward(A, BackwardContext([(1, 2, 3, 4)]))
    lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
    rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1)
    assert torch.allclose(lhs, rhs, atol=1e-4) and bias == 0.0
    model = _resize_model("linear", "half_pixel", [1, 1, 2, 2])
    graph = load_onnx(model)
    lower, upper = -torch.ones(1, 1, 2, 3, 4), torch.ones(1, 1, 2, 3, 4)
    rows = torch.randn(1, 4, 96, generator=rng)
    result = compute_bounds(graph, lower, upper, rows, config=BoundConfig(method="crown"))
    points = lower + (upper - lower) * torch.rand(2000, 1, 2, 3, 4, generator=rng)
    values = graph.forward(points).reshape(2000, -1) @ rows[0].T
    assert (values >= result.lower - 1e-4).all()
    # linear in the input: CROWN's bound is the exact minimum over the box
    exact = -(rows[0] @ torch.from_numpy(np.asarray(linear_matrix(graph))).float()).abs().sum(-1)
    assert torch.allclose(result.lower[0], exact, atol=1e-3)


def linear_matrix(graph) -> np.ndarray:
    """The model's matrix (output x input), by probing unit inputs."""
    eye = torch.eye(24).reshape(24, 1, 2, 3, 4)
    return graph.forward(eye).reshape(24, -1).T.double().numpy()
