"""Linear/structural operators: the adjoint identity of ``backward`` and
interval enclosure (by sampling) on random instances."""
from __future__ import annotations

import pytest
import torch

from bounds.ops.add import Add2
from bounds.ops.base import BackwardContext
from bounds.ops.conv import Conv, ConvTranspose
from bounds.ops.discrete import ArgMax, Cast, Equal, OneHot
from bounds.ops.elementwise_affine import ElementwiseAffine
from bounds.ops.linear import Linear, MatMulConst
from bounds.ops.pooling_avg import AveragePool
from bounds.ops.reduce import Reduce
from bounds.ops.shape_ops import AxisSelect, Concat, Expand, Pad, Reshape, Transpose



@pytest.fixture(autouse=True)
def float64():
    """Float64 inside these tests only (exact identities up to rounding)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cases():
    g = _gen(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    conv_avg = Conv(torch.ones(3, 1, 2, 2), None, (1, 1), (1, 0, 0, 1), (1, 1), 3, (1, 3, 5, 4))
    inv_count = 1.0 / conv_avg.forward(torch.ones(1, 1, 3, 5, 4))[0]
    return {
        "linear": (Linear(r(4, 6), r(4)), [(1, 6)]),
        "matmul_right_batched": (MatMulConst(r(2, 3, 5), "right", (1, 4, 3), (2, 4, 5)), [(1, 4, 3)]),
        "matmul_left": (MatMulConst(r(5, 4), "left", (1, 4, 3), (1, 5, 3)), [(1, 4, 3)]),
        "affine_broadcast_up": (ElementwiseAffine(r(3, 1, 4), r(4), (1, 2, 4)), [(1, 2, 4)]),
        "affine_channel": (ElementwiseAffine(r(3, 1, 1), r(3, 1, 1), (1, 3, 4, 4)), [(1, 3, 4, 4)]),
        "add2_broadcast": (Add2((1, 3, 4), (4,), 1.0, -2.0), [(1, 3, 4), (4,)]),
        "conv_stride_asym_group": (Conv(r(6, 2, 3, 2), r(6), (2, 1), (1, 0, 2, 1), (1, 2), 2, (1, 4, 7, 6)),
                                   [(1, 4, 7, 6)]),
        "conv_symmetric": (Conv(r(5, 3, 3, 3), r(5), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 3, 8, 7)),
                           [(1, 3, 8, 7)]),
        "conv1d": (Conv(r(4, 2, 3), None, (1,), (1, 1), (1,), 1, (1, 2, 9)), [(1, 2, 9)]),
        "conv_transpose": (ConvTranspose(r(4, 3, 3, 3), r(6), (2, 2), (1, 0, 0, 1), (1, 1), 2, (1, 1)),
                           [(1, 4, 5, 4)]),
        "reshape": (Reshape((6, 4)), [(1, 2, 3, 4)]),
        "transpose": (Transpose((0, 3, 1, 2)), [(1, 5, 4, 3)]),
        "concat_const": (Concat(1, [None, r(1, 2, 3), None], [3, 2, 1]), [(1, 3, 3), (1, 1, 3)]),
        "select": (AxisSelect((1, 6, 5), [(1, slice(1, 6, 2)), (2, torch.tensor([4, 0, 0, 2]))], (1, 12)),
                   [(1, 6, 5)]),
        "pad_value_and_crop": (Pad([0, 1, -1, 0, 2, 1], 0.7), [(1, 3, 4)]),
        "expand": (Expand((3, 1), (2, 3, 4)), [(3, 1)]),
        "reduce_sum": (Reduce([1], False, (1, 4, 3)), [(1, 4, 3)]),
        "reduce_mean_keep": (Reduce([0, 2], True, (2, 4, 3), mean=True), [(2, 4, 3)]),
        "average_pool": (AveragePool(conv_avg, inv_count), [(1, 3, 5, 4)]),
    }


CASE_NAMES = sorted(_cases())


@pytest.mark.parametrize("name", CASE_NAMES)
def test_backward_adjoint_identity(name):
    op, in_shapes = _cases()[name]
    g = _gen(2)
    B, S = 3, 5
    xs = [torch.randn(B, *s, generator=g) for s in in_shapes]
    y = op.forward(*xs)
    A = torch.randn(B, S, *y.shape[1:], generator=g)
    A_in, bias = op.backward(A, BackwardContext(input_shapes=in_shapes))
    lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
    rhs = sum((a * x.unsqueeze(1)).flatten(2).sum(-1) for a, x in zip(A_in, xs)) + bias
    for a, s in zip(A_in, in_shapes):
        assert tuple(a.shape) == (B, S, *s)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_interval_encloses_and_is_exact_at_extremes(name):
    op, in_shapes = _cases()[name]
    g = _gen(3)
    lowers = [torch.randn(1, *s, generator=g) for s in in_shapes]
    uppers = [l + torch.rand(1, *s, generator=g) for l, s in zip(lowers, in_shapes)]
    lo, hi = op.interval(*zip(lowers, uppers))
    n = 256
    xs = [l + torch.rand(n, *l.shape[1:], generator=g) * (u - l) for l, u in zip(lowers, uppers)]
    y = op.forward(*xs)
    assert bool((y >= lo - 1e-9).all()) and bool((y <= hi + 1e-9).all())
    # exact for a linear op: the bound is reached by the vertex chosen by the sign of the gradient
    assert bool((hi - lo >= -1e-12).all())
    if len(in_shapes) == 1:
        A = torch.zeros(1, 1, *lo.shape[1:])
        A.view(-1)[0] = 1.0
        A_in, bias = op.backward(A, BackwardContext(input_shapes=in_shapes))
        vertex = torch.where(A_in[0][:, 0] > 0, uppers[0], lowers[0])
        torch.testing.assert_close(op.forward(vertex).reshape(-1)[0], hi.reshape(-1)[0])


def test_discrete_intervals_enclose_samples():
    g = _gen(4)
    x_low = torch.randn(1, 4, 6, generator=g) * 2
    x_up = x_low + torch.rand(1, 4, 6, generator=g) * 2
    idx_low = torch.tensor([[0.0, 1.2, 2.0, 0.0]])
    idx_up = torch.tensor([[0.0, 2.7, 2.0, 3.0]])
    ops = [
        (ArgMax(1, False), (x_low, x_up)),
        (ArgMax(0, True, select_last_index=True), (x_low, x_up)),
        (OneHot(4, -1.0, 2.0, 1), (idx_low, idx_up)),
        (Equal(torch.tensor(2.0)), (idx_low, idx_up)),
        (Cast(to_bool=False), (x_low, x_up)),
        (Cast(to_bool=True), (idx_low - 0.5, idx_up - 0.5)),
    ]
    for op, (low, up) in ops:
        lo, hi = op.interval((low, up))
        pts = low + torch.rand(500, *low.shape[1:], generator=g) * (up - low)
        pts = torch.cat([pts, low, up, torch.round(pts)]).clamp(low, up)
        y = op.forward(pts)
        assert bool((y >= lo).all()) and bool((y <= hi).all()), op
    # Equal of two variables, and exactness on a point interval
    eq = Equal()
    lo, hi = eq.interval((idx_low, idx_up), (idx_low, idx_low))
    assert lo.tolist() == [[1.0, 0.0, 1.0, 0.0]] and hi.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    lo, hi = OneHot(4, 0.0, 1.0, 1).interval((idx_low, idx_up))
    assert lo[0, :, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and hi[0, :, 1].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_discrete_ops_have_no_backward():
    with pytest.raises(NotImplementedError):
        ArgMax(0, False).backward(torch.zeros(1, 1), BackwardContext(input_shapes=[(3,)]))
