"""Branching decisions and what they mean for bound propagation.

A *split* cuts the value ``z`` of one neuron of one node (the input of a
nonlinearity) at a point ``p``:

    direction = +1:   z >= p          direction = -1:   z <= p

A ReLU split is ``p = 0``; GenBaB splits a sigmoid/tanh/... input at any
``p``.  A domain is the input box plus its split *history* (a tuple of
splits).  A history acts on bound propagation in two ways:

* **box overrides**: the split neuron's box ``[l, u]`` becomes
  ``[max(l, p), u]`` or ``[l, min(u, p)]`` (a ReLU split at 0 makes the
  neuron stable, so its relaxation is exact);
* **constraints with multipliers** (beta-CROWN): ``+-(z - p) >= 0`` enter the
  backward pass as :class:`~bounds.constraints.LinearConstraints` with
  ``coeffs = +-e_i`` and ``const = -+p``; their betas are optimized with alpha.

Constraint slot ``k`` of node ``n`` for a domain is the ``k``-th split on ``n``
in the domain's history, so a child's betas are its parent's with one new
(zero) slot appended -- that is what makes warm starts line up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from bounds.constraints import LinearConstraints
from bounds.ops.base import Bounds

History = tuple["Split", ...]


@dataclass(frozen=True)
class Split:
    """``direction * (z_node[index] - point) >= 0``; ``index`` is a flat index."""

    node: str
    index: int
    point: float
    direction: int  # +1: z >= point, -1: z <= point

    def holds(self, value: float) -> bool:
        return self.direction * (value - self.point) >= 0


def branch(node: str, index: int, point: float = 0.0) -> tuple[Split, Split]:
    """The two children of splitting ``z_node[index]`` at ``point``: (below, above)."""
    return Split(node, index, point, -1), Split(node, index, point, +1)


def splits_on(history: Iterable[Split], node: str) -> list[Split]:
    return [s for s in history if s.node == node]


def split_nodes(histories: Sequence[History], order: Sequence[str]) -> list[str]:
    """Nodes split in any history of the batch, in the given (topological) order."""
    used = {s.node for h in histories for s in h}
    return [name for name in order if name in used]


def apply_to_boxes(boxes: Mapping[str, Bounds], histories: Sequence[History]) -> dict[str, Bounds]:
    """Per-domain boxes with every split neuron cut at its point.

    ``boxes[name]``: ``(lower, upper)`` of shape ``(B|1, *shape)``; the result
    has ``B = len(histories)`` rows for every split node (others are passed
    through unchanged).  Cutting never loosens: ``lower = max(lower, p)`` for
    ``z >= p`` and ``upper = min(upper, p)`` for ``z <= p``.
    """
    batch = len(histories)
    per_node: dict[str, tuple[list[int], list[int], list[float], list[int]]] = {}
    for b, history in enumerate(histories):
        for s in history:
            rows, idx, pts, dirs = per_node.setdefault(s.node, ([], [], [], []))
            rows.append(b)
            idx.append(s.index)
            pts.append(s.point)
            dirs.append(s.direction)
    out = dict(boxes)
    for name, (rows, idx, pts, dirs) in per_node.items():
        lower, upper = boxes[name]
        shape = tuple(lower.shape[1:])
        lower = lower.expand((batch,) + shape).flatten(1).clone()
        upper = upper.expand((batch,) + shape).flatten(1).clone()
        rows_t = torch.tensor(rows, device=lower.device)
        idx_t = torch.tensor(idx, device=lower.device)
        pts_t = torch.tensor(pts, dtype=lower.dtype, device=lower.device)
        above = torch.tensor(dirs, device=lower.device) > 0
        # a neuron may be split several times (GenBaB); apply in order with max/min
        for sel, target, fn in ((above, lower, torch.maximum), (~above, upper, torch.minimum)):
            if bool(sel.any()):
                r, i, p = rows_t[sel], idx_t[sel], pts_t[sel]
                # scatter_reduce handles repeated (row, index) pairs correctly
                flat = target.view(-1)
                flat.scatter_reduce_(0, r * target.shape[1] + i, p, reduce="amax" if fn is torch.maximum else "amin")
        out[name] = (lower.reshape((batch,) + shape), upper.reshape((batch,) + shape))
    return out


def build_constraints(histories: Sequence[History], node_shapes: Mapping[str, tuple[int, ...]],
                      nodes: Sequence[str], like: torch.Tensor) -> list[LinearConstraints]:
    """One :class:`LinearConstraints` per node of ``nodes`` (padded to the
    batch's largest split count on that node with inert zero rows).

    Slot ``k`` of domain ``b`` on node ``n`` is the ``k``-th split on ``n`` in
    ``histories[b]``: ``coeffs[b, k] = direction * e_index``,
    ``const[b, k] = -direction * point``.
    """
    batch = len(histories)
    result = []
    for name in nodes:
        shape = tuple(node_shapes[name])
        numel = 1
        for d in shape:
            numel *= d
        per_domain = [splits_on(h, name) for h in histories]
        slots = max((len(s) for s in per_domain), default=0)
        coeffs = torch.zeros(batch, max(slots, 1), numel, dtype=like.dtype, device=like.device)
        const = torch.zeros(batch, max(slots, 1), dtype=like.dtype, device=like.device)
        rows, ks, idx, sign, pts = [], [], [], [], []
        for b, splits in enumerate(per_domain):
            for k, s in enumerate(splits):
                rows.append(b)
                ks.append(k)
                idx.append(s.index)
                sign.append(float(s.direction))
                pts.append(s.point)
        if rows:
            r = torch.tensor(rows, device=like.device)
            k = torch.tensor(ks, device=like.device)
            sign_t = torch.tensor(sign, dtype=like.dtype, device=like.device)
            coeffs[r, k, torch.tensor(idx, device=like.device)] = sign_t
            const[r, k] = -sign_t * torch.tensor(pts, dtype=like.dtype, device=like.device)
        result.append(LinearConstraints(name, coeffs.reshape((batch, max(slots, 1)) + shape), const))
    return result


def pad_betas(betas: Sequence[Mapping[str, torch.Tensor] | None], histories: Sequence[History],
              nodes: Sequence[str], num_rows: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Warm-start multipliers ``(B, S, K_node)`` per node, zero where unknown.

    ``betas[b][node]``: the domain's stored ``(S, k)`` multipliers (``k`` may
    be smaller than its split count: a child's new slot starts at zero).
    """
    batch = len(histories)
    result = []
    for name in nodes:
        slots = max(max((len(splits_on(h, name)) for h in histories), default=0), 1)
        tensor = torch.zeros(batch, num_rows, slots, dtype=like.dtype, device=like.device)
        for b, stored in enumerate(betas):
            old = None if stored is None else stored.get(name)
            if old is not None and old.shape[0] == num_rows:
                k = min(int(old.shape[1]), slots)
                tensor[b, :, :k] = old[:, :k]
        result.append(tensor)
    return result


def unpad_betas(betas: Sequence[torch.Tensor], histories: Sequence[History],
                nodes: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`pad_betas`: per domain, ``{node: (S, k)}`` with ``k``
    the domain's own split count on that node."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in histories]
    for name, tensor in zip(nodes, betas):
        for b, history in enumerate(histories):
            k = len(splits_on(history, name))
            if k:
                out[b][name] = tensor[b, :, :k].clone()
    return out


def satisfied(histories: Sequence[History], values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Which domains' split decisions hold at concrete points (one per domain):
    ``values[node]`` is ``(B, *shape)``; returns a bool ``(B,)``."""
    ok = [True] * len(histories)
    for b, history in enumerate(histories):
        for s in history:
            if not s.holds(float(values[s.node][b].flatten()[s.index])):
                ok[b] = False
                break
    return torch.tensor(ok, dtype=torch.bool)
