"""Forward-mode linear bounds: every node as linear functions of the free inputs.

With ``x = c + r * t`` (``c``, ``r`` the box centre and radius, ``t`` in
``[-1, 1]^K`` over the ``K`` inputs whose interval is not a point), each node
``y`` gets two linear forms

    sum_k Wl_k t_k + bl  <=  y  <=  sum_k Wu_k t_k + bu,

kept as *images* of shape ``(B, K + 1, *shape)``: slots ``0..K-1`` hold the
coefficients, slot ``K`` the constant.  Their box is ``bl - sum|Wl|`` and
``bu + sum|Wu|``.  Rules, applied in one topological sweep:

* linear ops in each input up to a sign (reshapes, slices, sums, ``a x + b z``;
  ``Operator.input_signs``): ``y = M h + c`` maps the lower forms of inputs
  with a positive sign and the upper forms of the others;
* weight ops (``Operator.signed_parts`` gives ``M+`` and ``M-``):
  ``lower = M+ lower + M- upper``, ``upper = M+ upper + M- lower``;
* element-wise relaxations ``k x + b`` (``relax`` on the input's box): a
  positive slope takes the same-side form, a negative one the other;
* anything else restarts from its IBP box (constant forms).

The cost is about ``2 (K + 1)`` plain forward passes, against backward
CROWN's one pass per unstable neuron per layer: for networks with few free
inputs (generators, control nets, parameterized perturbations) the boxes of
all intermediate nodes come at a fraction of the cost; they are looser than
backward CROWN's, so the spec itself is still bounded by a backward pass.
Every box is intersected with IBP and with boxes supplied by the caller
(BaB splits), so it is never looser than either.
"""
from __future__ import annotations

import weakref
from typing import Mapping

import torch

from bounds.graph import Graph
from bounds.ibp import intersect, node_interval
from bounds.ops.base import Bounds, ElementwiseNonlinear

Forms = tuple[torch.Tensor, torch.Tensor]  # lower and upper images (B, K + 1, *shape)


_COSTS: dict[int, tuple[weakref.ref, float]] = {}


def backward_cost(graph: Graph) -> float:
    """Per-box cost estimate of backward intermediate bounds: every element of
    every node a relaxation reads, times the elements on its backward path
    (cached per graph)."""
    cached = _COSTS.get(id(graph))
    if cached is not None and cached[0]() is graph:
        return cached[1]
    wanted = {i for n in graph.nodes if not n.op.is_linear for i in n.inputs if graph.has_node(i)}
    cost = float(sum(graph.node(name).numel * (sum(a.numel for a in graph.ancestors(name)) + graph.input_numel)
                     for name in wanted))
    _COSTS[id(graph)] = (weakref.ref(graph), cost)
    return cost


def free_inputs(input_lower: torch.Tensor, input_upper: torch.Tensor) -> torch.Tensor:
    """Flat indices of the inputs whose interval is not a point in some box."""
    return ((input_upper - input_lower).flatten(1) > 0).any(0).nonzero().flatten()


def _input_forms(input_lower: torch.Tensor, input_upper: torch.Tensor, free: torch.Tensor) -> Forms:
    batch, shape = input_lower.shape[0], input_lower.shape[1:]
    k = int(free.numel())
    centre = (input_upper + input_lower) / 2
    radius = ((input_upper - input_lower) / 2).flatten(1)
    images = torch.zeros(batch, k + 1, shape.numel(), dtype=input_lower.dtype, device=input_lower.device)
    slots = torch.arange(k, device=input_lower.device)
    images[:, slots, free] = radius[:, free]
    images[:, k] = centre.flatten(1)
    images = images.reshape(batch, k + 1, *shape)
    return images, images


#: outward margin of a concretized box, in ulps of the magnitudes involved:
#: float32 forms carry the rounding of every layer, and a box tighter than the
#: exact range (even by rounding) makes LP oracles degenerate
MARGIN_ULPS = 32


def concretize(forms: Forms) -> Bounds:
    """Box of the forms over ``t in [-1, 1]^K``, widened by a few ulps."""
    lower, upper = forms
    eps = torch.finfo(lower.dtype).eps * MARGIN_ULPS
    low_spread, up_spread = lower[:, :-1].abs().sum(1), upper[:, :-1].abs().sum(1)
    low_margin = eps * (lower[:, -1].abs() + low_spread)
    up_margin = eps * (upper[:, -1].abs() + up_spread)
    return lower[:, -1] - low_spread - low_margin, upper[:, -1] + up_spread + up_margin


def _apply(op_fn, images: list[torch.Tensor]) -> torch.Tensor:
    """Run an operator on images ``(B, K + 1, *in_shape)`` as ``B (K + 1)`` samples."""
    batch, slots = images[0].shape[:2]
    out = op_fn(*(im.reshape(batch * slots, *im.shape[2:]) for im in images))
    return out.reshape(batch, slots, *out.shape[1:])


def _constant_term(op, inputs: list[torch.Tensor]) -> torch.Tensor:
    """``op(0)``: what an affine op adds to every image (only the constant slot keeps it)."""
    zeros = [torch.zeros(1, *im.shape[2:], dtype=im.dtype, device=im.device) for im in inputs]
    return op.forward(*zeros)


def _linear_forms(op, forms: list[Forms]) -> Forms | None:
    signs = op.input_signs
    if signs is not None:
        lows = [lo if s >= 0 else up for (lo, up), s in zip(forms, signs)]
        ups = [up if s >= 0 else lo for (lo, up), s in zip(forms, signs)]
        constant = _constant_term(op, lows)
        lower, upper = _apply(op.forward, lows), _apply(op.forward, ups)
        if bool(constant.ne(0).any()):  # the constant belongs to the constant slot only
            lower = torch.cat([lower[:, :-1] - constant, lower[:, -1:]], 1)
            upper = torch.cat([upper[:, :-1] - constant, upper[:, -1:]], 1)
        return lower, upper
    parts = op.signed_parts() if len(forms) == 1 else None
    if parts is None:
        return None
    positive, negative = parts
    (low, up), = forms
    lower = _apply(positive.forward, [low]) + _apply(negative.forward, [up])
    upper = _apply(positive.forward, [up]) + _apply(negative.forward, [low])
    constant = _constant_term(op, [low])
    lower[:, -1] += constant[0]    # fresh tensors (sums): safe to update in place
    upper[:, -1] += constant[0]
    return lower, upper


def _relaxed_forms(op: ElementwiseNonlinear, forms: Forms, box: Bounds) -> Forms:
    """``k x + b`` lines of the relaxation applied to the input's forms."""
    relax = op.relax(box[0], box[1], None)
    low, up = forms

    def line(slope, bias, same, other):
        slope = slope.expand_as(box[0]).unsqueeze(1)
        out = slope.clamp(min=0) * same + slope.clamp(max=0) * other
        out[:, -1] += bias.expand_as(box[0])
        return out

    return (line(relax.lower_slope, relax.lower_bias, low, up),
            line(relax.upper_slope, relax.upper_bias, up, low))


def _restart(box: Bounds, slots: int) -> Forms:
    """Constant forms holding a node's box (for ops without a forward rule)."""
    lower, upper = box
    zeros = torch.zeros(lower.shape[0], slots - 1, *lower.shape[1:], dtype=lower.dtype, device=lower.device)
    return torch.cat([zeros, lower.unsqueeze(1)], 1), torch.cat([zeros, upper.unsqueeze(1)], 1)


class ForwardSweep:
    """Forms of the nodes visited so far, one node at a time in topological
    order, so that a caller can tighten each box (backward passes) before the
    relaxations that read it are applied: :meth:`advance` gives a node's
    forward box, :meth:`settle` records the box the caller kept."""

    def __init__(self, graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor):
        self.graph = graph
        free = free_inputs(input_lower, input_upper)
        self.slots = int(free.numel()) + 1
        self.forms: dict[str, Forms] = {graph.input_name: _input_forms(input_lower, input_upper, free)}
        self.remaining = {name: len(users) for name, users in graph.consumers().items()}
        self._pending: Forms | None = None

    def advance(self, node, boxes: Mapping[str, Bounds]) -> Bounds | None:
        """Forms of ``node`` from its inputs' forms (relaxations on the inputs'
        ``boxes``); returns their box, or None when the node has no rule."""
        with torch.no_grad():
            inputs = [self.forms[i] for i in node.inputs]
            out = None
            if isinstance(node.op, ElementwiseNonlinear) and len(inputs) == 1:
                try:
                    out = _relaxed_forms(node.op, inputs[0], boxes[node.inputs[0]])
                except NotImplementedError:   # an op with hand-made bounds only: restart
                    out = None
            elif node.op.is_linear:
                out = _linear_forms(node.op, inputs)
            if out is not None and not bool(torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()):
                out = None   # an unbounded relaxation (log at 0, ...): restart from the box
        self._pending = out
        return None if out is None else concretize(out)

    def settle(self, node, box: Bounds) -> None:
        """Keep the forms of ``node`` (constant forms of ``box`` where it had no
        rule) and drop the forms nobody reads any more."""
        with torch.no_grad():
            self.forms[node.name] = self._pending if self._pending is not None else _restart(box, self.slots)
        self._pending = None
        for name in node.inputs:
            self.remaining[name] = self.remaining.get(name, 1) - 1
            if self.remaining[name] <= 0 and name != self.graph.output_name:
                self.forms.pop(name, None)


def tighten(ibp: Bounds, forward: Bounds | None) -> Bounds:
    """Intersection of a box with a forward box; where rounding makes them
    cross (points: nodes fed only by zero-width inputs) the first box stays."""
    if forward is None:
        return ibp
    lower, upper = torch.maximum(ibp[0], forward[0]), torch.minimum(ibp[1], forward[1])
    crossed = lower > upper
    return torch.where(crossed, ibp[0], lower), torch.where(crossed, ibp[1], upper)


def forward_boxes(graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor,
                  supplied: Mapping[str, Bounds] | None = None) -> dict[str, Bounds]:
    """Box of every node from forward linear forms alone, intersected with IBP
    and ``supplied`` boxes (trusted, as in :func:`bounds.ibp.interval_bounds`)."""
    supplied = supplied or {}
    sweep = ForwardSweep(graph, input_lower, input_upper)
    boxes: dict[str, Bounds] = {graph.input_name: (input_lower, input_upper)}
    for node in graph.nodes:
        box = tighten(node_interval(node, boxes), sweep.advance(node, boxes))
        if node.name in supplied:
            box = intersect(box, supplied[node.name])
        boxes[node.name] = box
        sweep.settle(node, box)
    return boxes
