"""Which input dimension to split, and the split itself.

A CROWN bound of a spec row over a box ``[l, u]`` is a linear function of the
input, ``f(x) >= a . x + c``, minimized at a vertex:

    lower = a . m - |a| . r + c,       m = (u + l) / 2,  r = (u - l) / 2.

Dimension ``i`` contributes ``|a_i| r_i`` of looseness to it, so splitting the
dimension with the largest ``|a_i| * (u_i - l_i)`` ("coefficient" scoring)
removes the most of it once the children are re-bounded (their relaxations
tighten too).  ``"widest"`` splits the widest dimension relative to the
root box; it ignores the network and serves as a baseline.

``"blend"`` adds to the coefficient score the relative width, scaled to the
box's best coefficient score:

    score_i = |a_i| w_i + max_j(|a_j| w_j) * (w_i / root_i) / max_k(w_k / root_k).

For smooth nonlinearities (Sin, Cos, products, ...) much of the looseness
sits in the relaxations' *biases*, which the coefficients do not see: pure
coefficient scoring keeps halving a few dimensions while a wide one stays
untouched (2024_lsnc quadrotor2d_state_16: 757k boxes, no proof in 40 s;
blend: 1.6k boxes, 0.6 s), whereas on ReLU nets (ACAS Xu) plain coefficient
scoring stays better (prop_5: 7.9k boxes vs a timeout).
"""
from __future__ import annotations

import torch

BRANCHING_RULES = ("coefficient", "widest", "blend")


def split_scores(coeffs: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 root_width: torch.Tensor | None = None, rule: str = "coefficient") -> torch.Tensor:
    """Score ``(B, n)`` of every input dimension of every box (higher: split it).

    ``coeffs``: ``(B, n)`` input coefficients of the row that decides the box
    (see :func:`bab.input_split.target_rows`); ``lower``/``upper``: ``(B, n)``.
    ``root_width``: ``(B, n)`` widths of the boxes' root boxes (for ``"widest"``).
    """
    width = upper - lower
    if rule == "blend":
        score = split_scores(coeffs, lower, upper, root_width, "coefficient")
        ref = root_width if root_width is not None else torch.ones_like(width)
        relative = width / ref.clamp(min=1e-30)
        relative = relative / relative.amax(dim=1, keepdim=True).clamp(min=1e-30)
        return score + score.amax(dim=1, keepdim=True) * relative
    if rule == "coefficient":
        score = coeffs.abs() * width
        # a box whose coefficients vanish (e.g. all ReLUs dead) still needs a split
        fallback = width / width.amax(dim=1, keepdim=True).clamp(min=1e-30) * 1e-12
        return score + fallback
    if rule == "widest":
        ref = root_width if root_width is not None else torch.ones_like(width)
        return width / ref.clamp(min=1e-30)
    raise ValueError(f"unknown input branching rule {rule!r}; expected one of {BRANCHING_RULES}")


def split_boxes(lower: torch.Tensor, upper: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halve box ``b`` along ``dims[b]``: returns ``(lower, upper)`` of ``2B``
    children, the lower halves first (child ``b`` and ``B + b`` come from box ``b``)."""
    rows = torch.arange(lower.shape[0], device=lower.device)
    middle = (lower[rows, dims] + upper[rows, dims]) / 2
    left_upper = upper.clone()
    left_upper[rows, dims] = middle
    right_lower = lower.clone()
    right_lower[rows, dims] = middle
    return torch.cat([lower, right_lower]), torch.cat([left_upper, upper])
