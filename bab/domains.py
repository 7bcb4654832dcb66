"""The domain store of branch and bound.

A domain is the input box (shared) plus a split history.  For each open domain
the store keeps what its next bounding pass reuses:

* ``boxes``: intermediate boxes ``{node: (lower, upper)}`` (per-sample shapes,
  split neurons already cut), so children need not recompute them;
* ``alphas`` / ``betas``: warm starts of the relaxation slopes
  (``{node: {name: (R, *shape)}}``) and split multipliers (``{node: (S, k)}``);
* ``row_lower``: certified lower bound of every spec row ``(S,)``;
* ``score``: the domain's bound on the property, the worst clause's best row
  (the domain is verified when it exceeds the proof tolerance).

Open domains are popped worst-score first (the domains that decide the
search, and where counterexamples live).  Batches come out as
:class:`DomainBatch`, with every per-domain tensor stacked along a leading
batch axis ``B``; children go back in with :meth:`DomainStore.push`.  When the
queue holds more than ``capacity`` domains the store pops the *deepest*
domains instead (depth-first), which closes subtrees and bounds the memory.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import torch

from bab.splits import History
from bounds.ops.base import Bounds


@dataclass
class Domain:
    """One open domain (tensors without a batch axis)."""

    history: History
    row_lower: torch.Tensor               # (S,)
    score: float
    boxes: dict[str, Bounds] = field(default_factory=dict)
    alphas: dict[str, dict[str, torch.Tensor]] | None = None
    betas: dict[str, torch.Tensor] | None = None

    @property
    def depth(self) -> int:
        return len(self.history)


@dataclass
class DomainBatch:
    """Domains stacked along a leading axis ``B`` (what a bounding pass eats).

    ``boxes[node]``: ``(B, *shape)``; ``alphas[node][name]``: ``(B, R, *shape)``
    (present only when every domain has them with one shape); ``betas``: per
    domain (ragged: padded by :func:`bab.splits.pad_betas` when bounded).
    """

    histories: list[History]
    row_lower: torch.Tensor               # (B, S)
    boxes: dict[str, Bounds]
    alphas: dict[str, dict[str, torch.Tensor]] | None
    betas: list[dict[str, torch.Tensor] | None]

    def __len__(self) -> int:
        return len(self.histories)

    def split(self) -> list[Domain]:
        """Unstack into single domains (copies, so the batch tensors can go)."""
        out = []
        for b, history in enumerate(self.histories):
            boxes = {k: (lo[b].clone(), up[b].clone()) for k, (lo, up) in self.boxes.items()}
            alphas = None if self.alphas is None else {
                n: {k: v[b].clone() for k, v in p.items()} for n, p in self.alphas.items()}
            out.append(Domain(history, self.row_lower[b].clone(), 0.0, boxes, alphas, self.betas[b]))
        return out


def stack(domains: Sequence[Domain]) -> DomainBatch:
    """Stack single domains into a :class:`DomainBatch`."""
    boxes = {}
    for name in domains[0].boxes:
        boxes[name] = (torch.stack([d.boxes[name][0] for d in domains]),
                       torch.stack([d.boxes[name][1] for d in domains]))
    alphas = None
    if all(d.alphas is not None for d in domains):
        first = domains[0].alphas
        same = all(d.alphas.keys() == first.keys() and all(
            d.alphas[n][k].shape == v.shape for n, p in first.items() for k, v in p.items())
            for d in domains)
        if same:
            alphas = {n: {k: torch.stack([d.alphas[n][k] for d in domains]) for k in p}
                      for n, p in first.items()}
    return DomainBatch([d.history for d in domains], torch.stack([d.row_lower for d in domains]),
                       boxes, alphas, [d.betas for d in domains])


class DomainStore:
    """Open domains, worst score first; depth-first above ``capacity``."""

    def __init__(self, capacity: int = 2_000_000):
        self.capacity = capacity
        self._heap: list[tuple[float, int, Domain]] = []
        self._counter = itertools.count()
        self.max_depth = 0
        self.pushed = 0

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def depth_first(self) -> bool:
        return len(self._heap) > self.capacity

    def worst_score(self) -> float:
        """Lowest score of an open domain (the global lower bound), +inf if empty."""
        return self._heap[0][0] if self._heap else float("inf")

    def push(self, domain: Domain) -> None:
        self.max_depth = max(self.max_depth, domain.depth)
        self.pushed += 1
        heapq.heappush(self._heap, (domain.score, next(self._counter), domain))

    def push_all(self, domains: Sequence[Domain]) -> None:
        for d in domains:
            self.push(d)

    def pop(self, count: int) -> list[Domain]:
        """Up to ``count`` domains: the worst-scored, or the deepest when the
        queue is over capacity (depth-first closes subtrees quickly)."""
        if not self._heap:
            return []
        if self.depth_first:
            chosen = heapq.nlargest(count, range(len(self._heap)),
                                    key=lambda i: (self._heap[i][2].depth, -self._heap[i][0]))
            keep = set(chosen)
            taken = [self._heap[i][2] for i in chosen]
            self._heap = [item for i, item in enumerate(self._heap) if i not in keep]
            heapq.heapify(self._heap)
            return taken
        return [heapq.heappop(self._heap)[2] for _ in range(min(count, len(self._heap)))]


def bytes_per_domain(domain: Domain) -> int:
    """Memory one stored domain takes (its tensors)."""
    total = domain.row_lower.numel() * domain.row_lower.element_size()
    for lo, up in domain.boxes.values():
        total += (lo.numel() + up.numel()) * lo.element_size()
    for params in (domain.alphas or {}).values():
        total += sum(v.numel() * v.element_size() for v in params.values())
    for beta in (domain.betas or {}).values():
        total += beta.numel() * beta.element_size()
    return total


def capacity_for(domain: Domain, memory_bytes: int, max_domains: int) -> int:
    """Queue cap from a memory budget and the size of one domain."""
    return max(1, min(max_domains, memory_bytes // max(bytes_per_domain(domain), 1)))
