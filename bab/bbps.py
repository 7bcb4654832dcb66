"""Which general-nonlinearity neuron to split: BBPS and a width baseline.

A *site* is an element-wise nonlinear node ``y = f(z)``; its neurons are
split on ``z`` at a point ``p`` (the lookup-table point, or 0 for kinked
activations like ReLU).

**BBPS** (bound-based branching point selection, GenBaB).  The spec pass
gives coefficients ``A`` (``(B, S, n)``) on ``y``; with the parent's
relaxation ``k z + b`` (lower line where ``A > 0``, upper where ``A < 0``)
the neuron contributes ``A (k z + b)`` to the bound.  A child on ``[a, c]``
with relaxation ``k' z + b'`` changes that term by

    delta(z) = A+ ((k'_l - k_l) z + b'_l - b_l) + A- ((k'_u - k_u) z + b'_u - b_u),

linear in ``z``, so its minimum over ``[a, c]`` is at an end.  Keeping the
rest of the linear bound fixed, the child's row bound is estimated as
``row_lower + min delta`` -- no backward pass needed.  A neuron's score is
its worse child's clause score (the domain's bound after the split); the
top-k neurons per domain are then bounded for real (filtered branching).

**Width baseline**: ``(u - l) * sum_s w_s |A_s|`` -- how much the neuron's
interval, weighted by its influence on the open rows, could matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from bab.lookup_table import branching_points
from bounds.graph import Graph
from bounds.ops.base import Bounds, ElementwiseNonlinear

#: Activations with a kink at 0: split there (both children become tighter, often exact).
KINK_AT_ZERO = ("Relu", "LeakyRelu", "Sign")
#: Intervals narrower than this (relative to their magnitude) are not split further.
MIN_RELATIVE_WIDTH = 1e-5


@dataclass(frozen=True)
class SplitSite:
    """An element-wise nonlinear node (``node``) and the node it reads (``source``,
    where splits and boxes live).  Field names match ``bab.branching.ReluSite``
    so :func:`bab.branching.coefficient_pass` records at ``relu = node``."""

    relu: str
    source: str
    numel: int
    op: ElementwiseNonlinear

    @property
    def node(self) -> str:
        return self.relu


def split_sites(graph: Graph) -> list[SplitSite]:
    """Every element-wise nonlinear node with a relaxation, in topological order.

    A source read by two nonlinear nodes is kept once (the first reader).
    """
    sites, seen = [], set()
    for node in graph.nodes:
        if isinstance(node.op, ElementwiseNonlinear) and len(node.inputs) == 1 and node.inputs[0] not in seen:
            source = node.inputs[0]
            if not graph.has_node(source):  # the graph input: input splitting's job
                continue
            seen.add(source)
            sites.append(SplitSite(node.name, source, graph.node(source).numel, node.op))
    return sites


def splittable(site: SplitSite, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Neurons worth splitting: kinked ones straddling 0, smooth ones not yet narrow."""
    if site.op.op_type in KINK_AT_ZERO:
        return (lower < 0) & (upper > 0)
    scale = 1 + torch.maximum(lower.abs(), upper.abs())
    return (upper - lower > MIN_RELATIVE_WIDTH * scale) & torch.isfinite(lower) & torch.isfinite(upper)


def split_points(site: SplitSite, lower: torch.Tensor, upper: torch.Tensor, use_table: bool = True) -> torch.Tensor:
    """Split point per neuron, ``(B, n)`` like ``lower``."""
    if site.op.op_type in KINK_AT_ZERO:
        return torch.zeros_like(lower)
    return branching_points(site.op, lower, upper, use_table)


def bbps_scores(sites: Sequence[SplitSite], boxes: Mapping[str, Bounds], coeffs: Mapping[str, torch.Tensor],
                params: Mapping[str, Mapping[str, torch.Tensor]] | None, row_lower: torch.Tensor,
                clause_score: Callable[[torch.Tensor], torch.Tensor], use_table: bool = True,
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(scores, points)`` per site source, each ``(B, n)``.

    ``scores``: estimated worse-child clause score (``-inf`` where the neuron
    is not splittable); ``coeffs[site.node]``: ``(B|1, S, *shape)``;
    ``params[site.node]``: the alpha parameters used in the pass (or None);
    ``row_lower``: ``(B, S)``; ``clause_score``: ``(N, S) -> (N,)``.
    """
    scores, points = {}, {}
    for site in sites:
        lower, upper = boxes[site.source]
        batch = lower.shape[0]
        shape = tuple(lower.shape[1:])
        flat_lo, flat_up = lower.flatten(1), upper.flatten(1)
        point = split_points(site, flat_lo, flat_up, use_table)
        points[site.source] = point
        ok = splittable(site, flat_lo, flat_up)
        A = coeffs.get(site.node)
        if A is None or not bool(ok.any()):
            scores[site.source] = torch.full_like(flat_lo, -float("inf"))
            continue
        A = A.flatten(2).expand(batch, -1, -1)                                  # (B, S, n)
        a_pos, a_neg = A.clamp(min=0), A.clamp(max=0)
        node_params = None if params is None else params.get(site.node)
        parent = _relax_terms_shaped(site, flat_lo, flat_up, shape, node_params)
        worst = None
        # both children's relaxations in one call (the relaxation's cost is
        # mostly per call: a bisection loop over small tensors)
        both = _relax_terms_shaped(site, torch.cat([flat_lo, point]), torch.cat([point, flat_up]), shape, None)
        for side, (a, c) in enumerate(((flat_lo, point), (point, flat_up))):
            child = [t[side * batch:(side + 1) * batch] for t in both]
            slope_gap = a_pos * (child[0] - parent[0]) + a_neg * (child[2] - parent[2])
            bias_gap = a_pos * (child[1] - parent[1]) + a_neg * (child[3] - parent[3])
            delta = torch.minimum(slope_gap * a.unsqueeze(1), slope_gap * c.unsqueeze(1)) + bias_gap
            estimate = row_lower.unsqueeze(-1) + delta                           # (B, S, n)
            child_score = clause_score(estimate.transpose(1, 2).reshape(-1, A.shape[1])).reshape(batch, -1)
            worst = child_score if worst is None else torch.minimum(worst, child_score)
        # ties (no estimated gain anywhere) broken by the width baseline
        tie = width_scores([site], boxes, coeffs, torch.ones_like(row_lower))[site.source]
        worst = worst + 1e-7 * tie.clamp(min=0, max=1e6) / (1 + tie.clamp(min=0, max=1e6))
        scores[site.source] = torch.where(ok, worst, torch.full_like(worst, -float("inf")))
    return scores, points


def _relax_terms_shaped(site, lower, upper, shape, params):
    """Relaxation on flat ``(B, n)`` bounds, reshaped for params of shape ``(B, R, *shape)``."""
    lo = lower.reshape((lower.shape[0],) + shape).unsqueeze(1)
    up = upper.reshape((upper.shape[0],) + shape).unsqueeze(1)
    with torch.no_grad():
        relax = site.op.relax(lo, up, params)
    terms = []
    for t in (relax.lower_slope, relax.lower_bias, relax.upper_slope, relax.upper_bias):
        t = torch.broadcast_to(t, torch.broadcast_shapes(t.shape, lo.shape)).flatten(2)
        terms.append(torch.nan_to_num(t, nan=0.0, posinf=1e30, neginf=-1e30))
    return terms


def width_scores(sites: Sequence[SplitSite], boxes: Mapping[str, Bounds], coeffs: Mapping[str, torch.Tensor],
                 row_weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Baseline ``(u - l) * sum_s w_s |A_s|`` per site source ``(B, n)``; ``-inf``
    where not splittable.  ``row_weight``: ``(B, S)``."""
    scores = {}
    for site in sites:
        lower, upper = boxes[site.source]
        batch = lower.shape[0]
        flat_lo, flat_up = lower.flatten(1), upper.flatten(1)
        ok = splittable(site, flat_lo, flat_up)
        A = coeffs.get(site.node)
        if A is None:
            scores[site.source] = torch.full_like(flat_lo, -float("inf"))
            continue
        influence = (A.flatten(2).abs().expand(batch, -1, -1) * row_weight.unsqueeze(-1)).sum(1)
        score = torch.nan_to_num((flat_up - flat_lo) * influence, nan=0.0, posinf=1e30)
        scores[site.source] = torch.where(ok, score, torch.full_like(score, -float("inf")))
    return scores
