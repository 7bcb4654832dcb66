"""ReLU: ``y = max(x, 0)``.

Relaxation on ``[l, u]`` with ``l < 0 < u`` (unstable): upper chord
``y <= u (x - l) / (u - l)``; lower ``y >= alpha x`` for any ``alpha in [0, 1]``
(CROWN's default picks ``alpha = 1`` when ``u > -l``, else 0).  Stable neurons
are exact: slope 1 when ``l >= 0``, slope 0 when ``u <= 0``.
"""
from __future__ import annotations

import torch

from bounds.ops.base import ElementwiseNonlinear, LinearRelaxation


class ReLU(ElementwiseNonlinear):
    op_type = "Relu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def relax(self, lower, upper, params=None) -> LinearRelaxation:
        active = lower >= 0
        inactive = upper <= 0
        unstable = ~(active | inactive)
        width = (upper - lower).clamp(min=1e-12)
        chord = torch.where(unstable, upper / width, active.to(lower.dtype))
        upper_bias = torch.where(unstable, -lower * upper / width, torch.zeros_like(lower))
        # rounding of the chord can put it an ulp below u or 0 at the ends
        eps = torch.finfo(lower.dtype).eps
        upper_bias = upper_bias + torch.where(unstable, 4 * eps * (upper - lower), torch.zeros_like(lower))
        if params is not None and "alpha" in params:
            alpha = params["alpha"]
        else:
            alpha = (upper > -lower).to(lower.dtype)
        lower_slope = torch.where(unstable, alpha, active.to(lower.dtype))
        return LinearRelaxation(lower_slope, torch.zeros_like(lower_slope), chord, upper_bias)

    def init_params(self, bounds):
        lower, upper = bounds[0]
        return {"alpha": (upper > -lower).to(lower.dtype).unsqueeze(1).clone()}

    def clip_params(self, params):
        params["alpha"].data.clamp_(0.0, 1.0)
