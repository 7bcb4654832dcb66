"""Backward rules of the non-element-wise nonlinear ops, checked by sampling:
``sum(A * f(x)) >= sum(A_in * x) + bias`` for random ``A`` of both signs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bounds.ops.base import BackwardContext
from bounds.ops.pooling_max import MaxPool
from bounds.ops.product import MatMul2, Mul2
from bounds.ops.softmax import Softmax

torch.set_num_threads(1)
EXAMPLES = 40
SAMPLES = 200


def random_box(gen, shape, scale, batch=2):
    centre = torch.randn(batch, *shape, generator=gen, dtype=torch.float64) * scale
    width = torch.rand(batch, *shape, generator=gen, dtype=torch.float64) * scale
    width = torch.where(torch.rand(width.shape, generator=gen) < 0.2, torch.zeros_like(width), width)
    return centre - width, centre + width


def sample_box(gen, box, n):
    lo, up = box
    t = torch.rand(n, *lo.shape, generator=gen, dtype=torch.float64)
    t = torch.where(t < 0.15, torch.zeros_like(t), torch.where(t > 0.85, torch.ones_like(t), t))  # corners
    return lo + t * (up - lo)


def check_backward(op, shapes, boxes, gen, params=None, specs=3):
    out = op.forward(*(b[0] for b in boxes))
    A = torch.randn(out.shape[0], specs, *out.shape[1:], generator=gen, dtype=torch.float64)
    ctx = BackwardContext(input_shapes=shapes, input_bounds=boxes, params=params)
    A_ins, bias = op.backward(A, ctx)
    for A_in, shape in zip(A_ins, shapes):
        assert A_in.shape[2:] == tuple(shape)
    xs = [sample_box(gen, b, SAMPLES) for b in boxes]
    worst = math.inf
    lo_i, up_i = op.interval(*boxes) if len(boxes) > 1 else op.interval(boxes[0])
    for n in range(SAMPLES):
        point = [x[n] for x in xs]
        y = op.forward(*point)
        assert (y >= lo_i - 1e-9).all() and (y <= up_i + 1e-9).all()
        lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
        rhs = bias + sum((A_in * p.unsqueeze(1)).flatten(2).sum(-1) for A_in, p in zip(A_ins, point))
        worst = min(worst, (lhs - rhs).min().item())
    assert worst >= -1e-9 * (1 + A.abs().sum().item())
    return worst


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.01, 1.0, 30.0]), mixed=st.booleans())
def test_mul2_backward_sound(seed, scale, mixed):
    gen = torch.Generator().manual_seed(seed)
    shape_x, shape_y = (2, 3), (3,)  # numpy broadcasting
    op = Mul2()
    boxes = [random_box(gen, shape_x, scale), random_box(gen, shape_y, scale)]
    params = None
    if mixed:
        params = op.init_params(boxes)
        params = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        op.clip_params(params)
    check_backward(op, [shape_x, shape_y], boxes, gen, params)


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.01, 1.0, 30.0]),
       case=st.sampled_from(["plain", "batched", "broadcast", "vec_left", "vec_right"]))
def test_matmul2_backward_sound(seed, scale, case):
    gen = torch.Generator().manual_seed(seed)
    shape_x, shape_y = {"plain": ((3, 4), (4, 2)), "batched": ((2, 3, 4), (2, 4, 5)),
                        "broadcast": ((1, 2, 3, 4), (4, 2)), "vec_left": ((4,), (4, 3)),
                        "vec_right": ((2, 4), (4,))}[case]
    boxes = [random_box(gen, shape_x, scale), random_box(gen, shape_y, scale)]
    check_backward(MatMul2(), [shape_x, shape_y], boxes, gen)


def test_mul2_exact_for_fixed_factor():
    """With y fixed the planes collapse to the exact product."""
    gen = torch.Generator().manual_seed(1)
    x_box = random_box(gen, (4,), 1.0, batch=1)
    y = torch.tensor([[2.0, -1.0, 0.5, 3.0]], dtype=torch.float64)
    worst = check_backward(Mul2(), [(4,), (4,)], [x_box, (y, y)], gen)
    assert worst == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.1, 1.0, 10.0]),
       config=st.sampled_from([((2, 2), (2, 2), (0, 0, 0, 0), False), ((3, 3), (2, 2), (1, 1, 1, 1), True),
                               ((2, 3), (1, 2), (0, 1, 1, 0), False), ((3, 2), (2, 1), (1, 0, 0, 1), True),
                               ((3,), (2,), (1, 1), True)]))
def test_maxpool_backward_sound(seed, scale, config):
    kernel, strides, pads, ceil = config
    gen = torch.Generator().manual_seed(seed)
    shape = (1, 2, 5, 6) if len(kernel) == 2 else (1, 3, 7)
    op = MaxPool(kernel, strides, pads, None, ceil)
    check_backward(op, [shape], [random_box(gen, shape, scale)], gen)


def test_maxpool_exact_when_one_input_dominates():
    op = MaxPool((2, 2), (2, 2), (0, 0, 0, 0))
    lower = torch.tensor([[[[5.0, 0.0], [1.0, 2.0]]]], dtype=torch.float64)
    upper = lower + torch.tensor([[[[1.0, 3.0], [2.0, 2.5]]]], dtype=torch.float64)  # max other upper 4.5 < 5
    A = torch.tensor([[[[[1.0]]], [[[-1.0]]]]], dtype=torch.float64)  # (B=1, S=2, 1, 1, 1)
    (A_in,), bias = op.backward(A, BackwardContext([(1, 1, 2, 2)], [(lower, upper)]))
    assert A_in[0, 0].flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    assert A_in[0, 1].flatten().tolist() == [-1.0, 0.0, 0.0, 0.0]
    assert bias.abs().max().item() == 0.0


def test_maxpool_forward_matches_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    for kernel, strides, pads, dil, ceil in [((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1), ((2, 3), (3, 2), (0, 1, 1, 0), (1, 1), 1),
                                             ((2, 2), (1, 1), (0, 0, 1, 1), (2, 1), 0), ((3, 2), (2, 2), (1, 0, 0, 1), (1, 1), 0)]:
        x = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(strides),
                                pads=list(pads), dilations=list(dil), ceil_mode=ceil)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 7])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        ours = MaxPool(kernel, strides, pads, dil, ceil).forward(torch.tensor(x).unsqueeze(0))[0]
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), axis=st.sampled_from([0, 1, 2]))
def test_softmax_bounds_sound(seed, scale, axis):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, 4)
    check_backward(Softmax(axis), [shape], [random_box(gen, shape, scale)], gen)


def test_softmax_interval_exact_at_point_and_tight():
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    lo, up = Softmax(0).interval((x, x))
    torch.testing.assert_close(lo, torch.softmax(x, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(up, torch.softmax(x, -1), atol=1e-12, rtol=0)
    lo, up = Softmax(0).interval((x - 0.1, x + 0.1))
    assert (up - lo).max().item() < 0.2
