"""Products of two bounded variables (McCormick planes).

For ``x in [xl, xu]``, ``y in [yl, yu]`` the four McCormick planes are

    x y >= yl x + xl y - xl yl        x y >= yu x + xu y - xu yu
    x y <= yu x + xl y - xl yu        x y <= yl x + xu y - xu yl

Any convex combination of the two lower (upper) planes is again a lower
(upper) bound.  We use the mix ``lam * plane_1 + (1 - lam) * plane_2``; with
``lam = 1/2`` both sides share the slopes ``(yc, xc)`` (box centre) and only
the biases differ, which keeps MatMul2 a pair of matrix products.
"""
from __future__ import annotations

import torch

from bounds.ops.base import BackwardContext, Operator, sum_tail
from bounds.ops.broadcast import lift_rank, sum_to_shape


def _rounding_margin(*terms: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(terms[0].dtype).eps
    return 8 * eps * sum(t.abs() for t in terms)


class Mul2(Operator):
    """Element-wise ``x * y`` of two variable tensors (numpy broadcasting).

    alpha-CROWN parameters ``lower_mix`` and ``upper_mix`` in ``[0, 1]``
    (shape ``(B, 1, *out_shape)``) weight the two McCormick planes per side.
    """

    op_type = "Mul2"
    is_linear = False
    num_inputs = 2

    def forward(self, x, y):
        rank = max(x.dim(), y.dim()) - 1  # align per-sample axes, never the batch axis
        return lift_rank(x, rank) * lift_rank(y, rank)

    def interval(self, x_bounds, y_bounds):
        xl, xu = x_bounds
        yl, yu = y_bounds
        rank = max(xl.dim(), yl.dim()) - 1
        xl, xu, yl, yu = (lift_rank(t, rank) for t in (xl, xu, yl, yu))
        corners = torch.stack(torch.broadcast_tensors(xl * yl, xl * yu, xu * yl, xu * yu))
        return corners.amin(0), corners.amax(0)

    def planes(self, x_bounds, y_bounds, params=None):
        """Mixed McCormick planes as ``(slope_x, slope_y, bias)`` per side,
        each shaped like the (broadcast) output with the batch axis."""
        xl, xu = x_bounds
        yl, yu = y_bounds
        rank = max(xl.dim(), yl.dim()) - 1
        xl, xu, yl, yu = (lift_rank(t, rank) for t in (xl, xu, yl, yu))
        lam_low = lam_up = 0.5
        if params is not None and "lower_mix" in params:
            lam_low = params["lower_mix"].squeeze(1).clamp(0, 1)
            lam_up = params["upper_mix"].squeeze(1).clamp(0, 1)
        low_x = lam_low * yl + (1 - lam_low) * yu
        low_y = lam_low * xl + (1 - lam_low) * xu
        low_b = -(lam_low * xl * yl + (1 - lam_low) * xu * yu)
        up_x = lam_up * yu + (1 - lam_up) * yl
        up_y = lam_up * xl + (1 - lam_up) * xu
        up_b = -(lam_up * xl * yu + (1 - lam_up) * xu * yl)
        reach_x = torch.maximum(xl.abs(), xu.abs())
        reach_y = torch.maximum(yl.abs(), yu.abs())
        low_b = low_b - _rounding_margin(low_b, low_x * reach_x, low_y * reach_y)
        up_b = up_b + _rounding_margin(up_b, up_x * reach_x, up_y * reach_y)
        return (low_x, low_y, low_b), (up_x, up_y, up_b)

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        (low_x, low_y, low_b), (up_x, up_y, up_b) = self.planes(*ctx.input_bounds, params=ctx.params)
        a_pos, a_neg = A.clamp(min=0), A.clamp(max=0)
        A_x = a_pos * low_x.unsqueeze(1) + a_neg * up_x.unsqueeze(1)
        A_y = a_pos * low_y.unsqueeze(1) + a_neg * up_y.unsqueeze(1)
        bias = sum_tail(a_pos * low_b.unsqueeze(1) + a_neg * up_b.unsqueeze(1))
        shape_x, shape_y = ctx.input_shapes
        return [sum_to_shape(A_x, tuple(shape_x)), sum_to_shape(A_y, tuple(shape_y))], bias

    def init_params(self, bounds):
        lower, _ = self.interval(*bounds)
        half = torch.full_like(lower, 0.5).unsqueeze(1)
        return {"lower_mix": half.clone(), "upper_mix": half.clone()}

    def clip_params(self, params):
        for key in ("lower_mix", "upper_mix"):
            params[key].data.clamp_(0.0, 1.0)


class MatMul2(Operator):
    """``x @ y`` of two variable tensors (ONNX MatMul: batched on the last two axes).

    Every product ``x_ik y_kj`` is relaxed by the averaged McCormick planes
    (``lam = 1/2``), whose slopes are the box centres for both sides, so

        sum(A * (x @ y)) >= sum((A @ yc^T) * x) + sum((xc^T @ A) * y)
                            - sum(A+ * (xl@yl + xu@yu)/2) - sum(A- * (xl@yu + xu@yl)/2)

    using only matrix products: memory ``O(B S (i j + i k + k j))``.
    """

    op_type = "MatMul2"
    is_linear = False
    num_inputs = 2

    @staticmethod
    def _as_matrices(x: torch.Tensor, y: torch.Tensor):
        """ONNX 1-D operands: ``x (k,)`` acts as ``(1, k)``, ``y (k,)`` as ``(k, 1)``;
        per-sample batch axes are aligned after the runtime batch axis."""
        if x.dim() == 2:
            x = x.unsqueeze(-2)
        if y.dim() == 2:
            y = y.unsqueeze(-1)
        rank = max(x.dim(), y.dim()) - 1
        return lift_rank(x, rank), lift_rank(y, rank)

    @staticmethod
    def _restore(z: torch.Tensor, x_vec: bool, y_vec: bool) -> torch.Tensor:
        if y_vec:
            z = z.squeeze(-1)
        if x_vec:
            z = z.squeeze(-2 if not y_vec else -1)
        return z

    def forward(self, x, y):
        x_vec, y_vec = x.dim() == 2, y.dim() == 2
        return self._restore(torch.matmul(*self._as_matrices(x, y)), x_vec, y_vec)

    def interval(self, x_bounds, y_bounds):
        """Centre/radius form: ``|x y - xc yc| <= |xc| yr + xr |yc| + xr yr``."""
        x_vec, y_vec = x_bounds[0].dim() == 2, y_bounds[0].dim() == 2
        xl, yl = self._as_matrices(*(b[0] for b in (x_bounds, y_bounds)))
        xu, yu = self._as_matrices(*(b[1] for b in (x_bounds, y_bounds)))
        xc, xr = (xu + xl) / 2, (xu - xl) / 2
        yc, yr = (yu + yl) / 2, (yu - yl) / 2
        centre = torch.matmul(xc, yc)
        radius = torch.matmul(xc.abs(), yr) + torch.matmul(xr, yc.abs()) + torch.matmul(xr, yr)
        margin = xl.shape[-1] * _rounding_margin(centre, radius)
        return (self._restore(centre - radius - margin, x_vec, y_vec),
                self._restore(centre + radius + margin, x_vec, y_vec))

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        (xl, xu), (yl, yu) = ctx.input_bounds
        shape_x, shape_y = (tuple(s) for s in ctx.input_shapes)
        x_vec, y_vec = len(shape_x) == 1, len(shape_y) == 1
        # ONNX 1-D operands: x (k,) is (1, k), y (k,) is (k, 1), that axis dropped
        xl, yl = self._as_matrices(xl, yl)
        xu, yu = self._as_matrices(xu, yu)
        if x_vec:
            A = A.unsqueeze(-2) if not y_vec else A.unsqueeze(-1).unsqueeze(-1)
        if y_vec and not x_vec:
            A = A.unsqueeze(-1)
        xc, yc = ((xl + xu) / 2).unsqueeze(1), ((yl + yu) / 2).unsqueeze(1)
        A_x = torch.matmul(A, yc.transpose(-1, -2))
        A_y = torch.matmul(xc.transpose(-1, -2), A)
        same_corner = (torch.matmul(xl, yl) + torch.matmul(xu, yu)) / 2
        cross_corner = (torch.matmul(xl, yu) + torch.matmul(xu, yl)) / 2
        reach = (torch.matmul(torch.maximum(xl.abs(), xu.abs()), torch.maximum(yl.abs(), yu.abs())))
        margin = (xl.shape[-1] * _rounding_margin(reach)).unsqueeze(1)  # k summed products
        bias = -sum_tail(A.clamp(min=0) * (same_corner.unsqueeze(1) + margin)
                         + A.clamp(max=0) * (cross_corner.unsqueeze(1) - margin))
        if x_vec:
            A_x = A_x.squeeze(-2)
        if y_vec:
            A_y = A_y.squeeze(-1)
        return [sum_to_shape(A_x, shape_x), sum_to_shape(A_y, shape_y)], bias
