"""Softmax along one axis: ``y_i = exp(x_i) / sum_j exp(x_j)``.

Linear relaxation (composed inside the operator).  Write

    y_i = r(s_i),   s_i = 1 + sum_{j != i} exp(d_ij),   d_ij = x_j - x_i,   r(s) = 1/s.

Over the box, ``d_ij in [l_j - u_i, u_j - l_i]``.  ``exp`` is convex: it lies
above any tangent and below its chord, so ``s_i`` is enclosed by two functions
*linear in x*:

    s_low_i(x) = 1 + sum_j (tangent of exp at t_ij)(x_j - x_i)
    s_up_i(x)  = 1 + sum_j (chord of exp on [dl_ij, du_ij])(x_j - x_i)

and ``s_i in [sl_i, su_i] = [1 + sum_j exp(dl_ij), 1 + sum_j exp(du_ij)]``.
``r`` is convex and decreasing on ``s > 0``; with its tangent ``T`` at
``tau_i`` and its chord ``C`` on ``[sl_i, su_i]`` (both decreasing lines):

    y_i = r(s_i) >= T(s_i) >= T(s_up_i(x))      (T below r, T decreasing)
    y_i = r(s_i) <= C(s_i) <= C(s_low_i(x))     (C above r on [sl, su], C decreasing)

Each side is a linear function of the whole softmax row ``x`` (an ``n x n``
coefficient matrix per row).  Tangent points: where the tangent slope equals
the chord slope (``t = dl + log(expm1(w)/w)`` for ``exp``,
``tau = sqrt(sl su)`` for ``r``), which balances the gap at both ends;
alpha-CROWN moves both points inside their intervals (any point is sound).
"""
from __future__ import annotations

import torch

from bounds.ops.base import Operator, sum_tail


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.device.type == "mps" else torch.float64  # mps has no float64


def _default_exp_ratio(d_low: torch.Tensor, d_up: torch.Tensor) -> torch.Tensor:
    """Position in ``[0, 1]`` of the chord-slope-matching tangent point of ``exp``."""
    width = d_up - d_low
    safe_width = torch.where(width < 1e-9, torch.ones_like(width), width)
    offset = torch.log(torch.expm1(safe_width) / safe_width)  # stable for small widths
    return (offset / safe_width).clamp(0, 1)


def _exp_lines(d_low: torch.Tensor, d_up: torch.Tensor, ratio: torch.Tensor | None = None):
    """Tangent (below, at ``d_low + ratio * width``) and chord (above) of ``exp``
    on ``[d_low, d_up]``: ``(tan_slope, tan_bias, chord_slope, chord_bias)``."""
    width = d_up - d_low
    tiny = width < 1e-9
    safe_width = torch.where(tiny, torch.ones_like(width), width)
    if ratio is None:
        ratio = _default_exp_ratio(d_low, d_up)
    t = torch.where(tiny, d_low, d_low + ratio.clamp(0, 1) * safe_width)
    tan_slope = torch.exp(t)
    tan_bias = tan_slope * (1 - t)
    exp_low, exp_up = torch.exp(d_low), torch.exp(d_up)
    chord_slope = torch.where(tiny, torch.zeros_like(width), (exp_up - exp_low) / safe_width)
    chord_bias = torch.where(tiny, exp_up, exp_low - chord_slope * d_low)
    return tan_slope, tan_bias, chord_slope, chord_bias


class Softmax(Operator):
    """ONNX Softmax (opset >= 13 semantics: a single axis).

    ``axis`` is the non-negative ONNX axis of the per-sample tensor; the
    runtime tensor has an extra leading batch axis, hence ``dim = axis + 1``.

    Interval bounds: ``y_i`` is increasing in ``x_i`` and decreasing in every
    other ``x_j``, so

        y_i >= exp(l_i - logsumexp(l_i, u_j for j != i))
        y_i <= exp(u_i - logsumexp(u_i, l_j for j != i))

    (exact at the box corners; ``O(n^2)`` per softmax row).  ``backward``
    uses the linear relaxation of the module docstring.
    """

    op_type = "Softmax"
    is_linear = False

    def __init__(self, axis: int):
        if axis < 0:
            raise ValueError(f"Softmax: axis must be normalized to >= 0, got {axis}")
        self.axis = int(axis)

    @property
    def dim(self) -> int:
        return self.axis + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.dim)

    def interval(self, bounds):
        lower, upper = bounds
        dtype = lower.dtype
        wd = _work_dtype(lower)
        low = lower.to(wd).movedim(self.dim, -1)
        up = upper.to(wd).movedim(self.dim, -1)
        n = low.shape[-1]
        diag = torch.eye(n, dtype=torch.bool, device=low.device)
        # row i of the n x n matrix: own bound on the diagonal, others' opposite bound
        worst_low = torch.where(diag, low.unsqueeze(-1), up.unsqueeze(-2))
        worst_up = torch.where(diag, up.unsqueeze(-1), low.unsqueeze(-2))
        y_low = torch.exp(low - torch.logsumexp(worst_low, dim=-1))
        y_up = torch.exp(up - torch.logsumexp(worst_up, dim=-1))
        eps = torch.finfo(dtype).eps
        y_low = (y_low * (1 - 4 * eps)).clamp(0, 1)
        y_up = (y_up * (1 + 4 * eps) + torch.finfo(dtype).tiny).clamp(0, 1)
        y_low = torch.nan_to_num(y_low, nan=0.0)
        y_up = torch.nan_to_num(y_up, nan=1.0)
        return y_low.movedim(-1, self.dim).to(dtype), y_up.movedim(-1, self.dim).to(dtype)

    def init_params(self, bounds):
        """alpha-CROWN: ``exp_ratio`` (tangent points of ``exp``, per ``(i, j)``)
        and ``recip_ratio`` (tangent point of ``1/s`` between ``sl`` and
        ``su``), both in ``[0, 1]``; any value is sound.  Softmax axis last."""
        lower, upper = bounds[0]
        wd = _work_dtype(lower)
        low = lower.to(wd).movedim(self.dim, -1).nan_to_num(0.0, 0.0, 0.0)
        up = upper.to(wd).movedim(self.dim, -1).nan_to_num(0.0, 0.0, 0.0)
        d_low = low.unsqueeze(-2) - up.unsqueeze(-1)
        d_up = up.unsqueeze(-2) - low.unsqueeze(-1)
        exp_ratio = _default_exp_ratio(d_low, d_up)
        n = low.shape[-1]
        off_diag = 1 - torch.eye(n, dtype=wd, device=low.device)
        s_min = 1 + (torch.exp(d_low.clamp(max=80)) * off_diag).sum(-1)
        s_max = 1 + (torch.exp(d_up.clamp(max=80)) * off_diag).sum(-1)
        recip_ratio = ((torch.sqrt(s_min * s_max) - s_min) / (s_max - s_min).clamp(min=1e-30)).clamp(0, 1)
        return {"exp_ratio": exp_ratio.to(lower.dtype).unsqueeze(1).clone(),
                "recip_ratio": recip_ratio.to(lower.dtype).unsqueeze(1).clone()}

    def clip_params(self, params):
        for key in ("exp_ratio", "recip_ratio"):
            if key in params:
                params[key].data.clamp_(0.0, 1.0)

    def relax_rows(self, lower: torch.Tensor, upper: torch.Tensor, params=None):
        """Linear bounds of every softmax row, with the softmax axis last.

        Returns ``(low_coeff, low_bias, up_coeff, up_bias)``: coefficients
        ``(B, ..., n, n)`` (row ``i`` bounds ``y_i``, column ``k`` multiplies
        ``x_k``) and biases ``(B, ..., n)``, in the input's dtype, with
        ``low_coeff @ x + low_bias <= softmax(x) <= up_coeff @ x + up_bias``
        on the box (rounding margins included).  Falls back to the constant
        interval bounds for rows where the box or the relaxation is not finite.
        """
        dtype = lower.dtype
        wd = _work_dtype(lower)
        low = lower.to(wd).movedim(self.dim, -1)
        up = upper.to(wd).movedim(self.dim, -1)
        n = low.shape[-1]
        finite = torch.isfinite(low).all(-1) & torch.isfinite(up).all(-1)
        low_f = torch.where(finite.unsqueeze(-1), low, torch.zeros_like(low))
        up_f = torch.where(finite.unsqueeze(-1), up, torch.zeros_like(up))
        eye = torch.eye(n, dtype=wd, device=low.device)
        off_diag = 1 - eye
        # d[i, j] = x_j - x_i ranges over [l_j - u_i, u_j - l_i]; d[i, i] = 0 exactly
        d_low = (low_f.unsqueeze(-2) - up_f.unsqueeze(-1)) * off_diag
        d_up = (up_f.unsqueeze(-2) - low_f.unsqueeze(-1)) * off_diag
        exp_ratio = recip_ratio = None
        if params is not None and "exp_ratio" in params:  # (B, 1, ..., n, n) / (B, 1, ..., n)
            exp_ratio = params["exp_ratio"].squeeze(1).to(wd)
            recip_ratio = params["recip_ratio"].squeeze(1).to(wd).clamp(0, 1)
        tan_slope, tan_bias, chord_slope, chord_bias = _exp_lines(d_low, d_up, exp_ratio)
        tan_slope, chord_slope = tan_slope * off_diag, chord_slope * off_diag
        tan_bias, chord_bias = tan_bias * off_diag, chord_bias * off_diag
        # s_i(x) as sum_j g_ij (x_j - x_i) + (1 + sum_j h_ij): coefficient matrix
        # has g_ij off the diagonal and -sum_j g_ij on it
        s_low_coeff = tan_slope - torch.diag_embed(tan_slope.sum(-1))
        s_low_bias = 1 + tan_bias.sum(-1)
        s_up_coeff = chord_slope - torch.diag_embed(chord_slope.sum(-1))
        s_up_bias = 1 + chord_bias.sum(-1)
        s_min = 1 + (torch.exp(d_low) * off_diag).sum(-1)
        s_max = 1 + (torch.exp(d_up) * off_diag).sum(-1)
        # reciprocal: tangent at sqrt(s_min s_max) (below), chord (above)
        tau = torch.sqrt(s_min * s_max) if recip_ratio is None else s_min + recip_ratio * (s_max - s_min)
        tan_r_slope, tan_r_bias = -1 / tau ** 2, 2 / tau
        chord_r_slope, chord_r_bias = -1 / (s_min * s_max), 1 / s_min + 1 / s_max
        low_coeff = tan_r_slope.unsqueeze(-1) * s_up_coeff
        low_bias = tan_r_slope * s_up_bias + tan_r_bias
        up_coeff = chord_r_slope.unsqueeze(-1) * s_low_coeff
        up_bias = chord_r_slope * s_low_bias + chord_r_bias
        # rounding: evaluating the bounds in the input dtype may move them by a
        # few ulps of the summed magnitudes; and the forward pass in that dtype
        # flushes outputs near its underflow threshold to 0 (float32: a true
        # ~1e-36 computed as 0 against a lower bound of 1.6e-36), hence an
        # absolute slack far above the smallest normal number
        reach = torch.maximum(low_f.abs(), up_f.abs()).unsqueeze(-2)
        eps, underflow = torch.finfo(dtype).eps, torch.finfo(dtype).tiny * 2 ** 30
        low_bias = low_bias - 16 * eps * (low_bias.abs() + (low_coeff.abs() * reach).sum(-1) + 1e-30) - underflow
        up_bias = up_bias + 16 * eps * (up_bias.abs() + (up_coeff.abs() * reach).sum(-1) + 1e-30) + underflow
        # non-finite boxes: constant interval bounds (zero coefficients)
        const_low, const_up = (t.to(wd).movedim(self.dim, -1) for t in self.interval((lower, upper)))
        keep = (finite & torch.isfinite(low_coeff).all(-1).all(-1) & torch.isfinite(up_coeff).all(-1).all(-1)
                & torch.isfinite(low_bias).all(-1) & torch.isfinite(up_bias).all(-1)).unsqueeze(-1)
        low_coeff = torch.where(keep.unsqueeze(-1), low_coeff, torch.zeros_like(low_coeff))
        up_coeff = torch.where(keep.unsqueeze(-1), up_coeff, torch.zeros_like(up_coeff))
        low_bias = torch.where(keep, low_bias, const_low)
        up_bias = torch.where(keep, up_bias, const_up)
        low_coeff, up_coeff = torch.nan_to_num(low_coeff), torch.nan_to_num(up_coeff)
        return low_coeff.to(dtype), low_bias.to(dtype), up_coeff.to(dtype), up_bias.to(dtype)

    def backward(self, A: torch.Tensor, ctx):
        """Lower bound of ``sum(A * y)``: positive coefficients take the lower
        rows, negative ones the upper rows (``A: (B, S, *shape)``)."""
        low_coeff, low_bias, up_coeff, up_bias = self.relax_rows(*ctx.input_bounds[0], ctx.params)
        moved = A.movedim(self.dim + 1, -1)  # (B, S, ..., n)
        a_pos, a_neg = moved.clamp(min=0), moved.clamp(max=0)
        A_in = (torch.matmul(a_pos.unsqueeze(-2), low_coeff.unsqueeze(1)).squeeze(-2)
                + torch.matmul(a_neg.unsqueeze(-2), up_coeff.unsqueeze(1)).squeeze(-2))
        bias = sum_tail(a_pos * low_bias.unsqueeze(1) + a_neg * up_bias.unsqueeze(1))
        return [A_in.movedim(-1, self.dim + 1)], bias

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"
