"""Interval bound propagation (IBP) through the graph.

For a box ``[l, u]`` on a node's inputs, each operator's ``interval`` rule
returns a box that encloses every value of its output.  Composing the rules in
topological order encloses every node of the DAG.  Boxes supplied by the
caller (e.g. BaB's tightened pre-activation bounds) are intersected in as soon
as their node is reached, so everything downstream profits from them.
"""
from __future__ import annotations

from typing import Mapping

import torch

from bounds.graph import Graph, Node
from bounds.ops.base import Bounds


def intersect(a: Bounds, b: Bounds | None) -> Bounds:
    """The intersection of two boxes (both enclose the same values)."""
    if b is None:
        return a
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def node_interval(node: Node, bounds: Mapping[str, Bounds]) -> Bounds:
    """IBP box of ``node`` from the boxes of its inputs."""
    return node.op.interval(*(bounds[name] for name in node.inputs))


def interval_bounds(graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor,
                    overrides: Mapping[str, Bounds] | None = None) -> dict[str, Bounds]:
    """Boxes of every node (and of the input) by name, shapes ``(B, *shape)``.

    ``overrides`` maps node names to boxes known to hold in the domain; they
    are intersected with the IBP box of that node before propagating further.
    """
    overrides = overrides or {}
    bounds: dict[str, Bounds] = {graph.input_name: (input_lower, input_upper)}
    for node in graph.nodes:
        box = node_interval(node, bounds)
        bounds[node.name] = intersect(box, overrides.get(node.name))
    return bounds


def spec_interval(spec_matrix: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  spec_offset: torch.Tensor | None = None) -> Bounds:
    """Exact bounds of ``spec_matrix @ y - spec_offset`` over the box ``[lower, upper]``.

    ``spec_matrix``: ``(B or 1, S, n)``; ``lower``/``upper``: ``(B, *shape)`` with
    ``n`` elements.  Returns ``(B, S)`` tensors: ``C c - |C| r`` and ``C c + |C| r``.
    """
    batch = lower.shape[0]  # reshape, not flatten(1): a scalar node is (B,)
    center = ((upper + lower) / 2).reshape(batch, -1, 1)  # (B, n, 1)
    radius = ((upper - lower) / 2).reshape(batch, -1, 1)
    mid = torch.matmul(spec_matrix, center).squeeze(-1)
    rad = torch.matmul(spec_matrix.abs(), radius).squeeze(-1)
    if spec_offset is not None:
        mid = mid - spec_offset
    return mid - rad, mid + rad
