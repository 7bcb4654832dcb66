"""Incomplete verification of VNN-LIB clauses by bound propagation.

A clause is a conjunction ``C y <= d`` describing (part of) the unsafe set.  It
is *proven* (no input of the box satisfies it) when some row ``j`` is violated
everywhere on the box:

    min_{x in box} (C_j y(x) - d_j)  >  PROOF_TOLERANCE.

The strict positive tolerance absorbs float32 rounding in the bound
computation (each backward step rounds; margins this small are not trusted).
We first run CROWN (cheap), and alpha-CROWN only for clauses CROWN leaves open.

Robustness-style properties are a disjunction of *single-row* clauses; all of
them are stacked into one spec matrix, so one backward pass bounds them all
(:func:`prove_clauses`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from bounds.engine import BoundConfig, BoundResult, compute_bounds
from bounds.graph import Graph
from vnnlib.spec import Clause

#: A row counts as violated only when its lower bound exceeds this margin.
PROOF_TOLERANCE = 1e-5


@dataclass
class ClauseOutcome:
    """``lower_bounds[j]``: certified lower bound of ``C_j y - d_j`` on the box."""

    proven: bool
    lower_bounds: torch.Tensor  # (k,)
    method: str                 # "crown", "alpha-crown", or "none" (deadline passed)
    time: float


def _box_tensors(graph: Graph, box_lower, box_upper, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.as_tensor(np.asarray(box_lower), dtype=dtype, device=device).reshape(shape)
    upper = torch.as_tensor(np.asarray(box_upper), dtype=dtype, device=device).reshape(shape)
    return lower, upper


def _bound_rows(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, matrix: np.ndarray,
                offset: np.ndarray, groups: Sequence[Sequence[int]], config: BoundConfig,
                deadline: float | None) -> tuple[torch.Tensor, str]:
    """Lower bounds of every row; CROWN, then alpha-CROWN while some group
    (a clause: its rows' indices) has no row above the tolerance."""
    spec = torch.as_tensor(matrix, dtype=lower.dtype, device=lower.device).unsqueeze(0)
    off = torch.as_tensor(offset, dtype=lower.dtype, device=lower.device).unsqueeze(0)

    def open_groups(bounds: torch.Tensor) -> list[Sequence[int]]:
        return [g for g in groups if not bool((bounds[list(g)] > PROOF_TOLERANCE).any())]

    crown_config = replace(config, method="crown")
    result = compute_bounds(graph, lower, upper, spec, off, config=crown_config, deadline=deadline)
    bounds, method = result.lower[0], "crown"
    remaining = open_groups(bounds)
    if config.method == "crown" or not remaining:
        return bounds, method
    if deadline is not None and time.monotonic() > deadline:
        return bounds, method
    rows = sorted({r for g in remaining for r in g})
    # optimize only rows of open clauses; a single clause may stop at its first proven row
    stop_mode = "any" if len(remaining) == 1 else "all"
    alpha_config = replace(config, method="alpha-crown", early_stop_margin=PROOF_TOLERANCE,
                           early_stop_mode=stop_mode)
    # plain alpha: reuse CROWN's intermediate boxes instead of recomputing them
    reuse = result.intermediate if config.optimize_intermediate is False else None
    optimized = compute_bounds(graph, lower, upper, spec[:, rows], off[:, rows], config=alpha_config,
                               intermediate=reuse, deadline=deadline)
    bounds = bounds.clone()
    bounds[rows] = torch.maximum(bounds[rows], optimized.lower[0])
    return bounds, "alpha-crown"


def prove_clause(graph: Graph, box_lower, box_upper, clause: Clause, config: BoundConfig | None = None,
                 deadline: float | None = None) -> ClauseOutcome:
    """Try to show that no input of the box satisfies ``clause`` (``C y <= d``).

    ``box_lower``/``box_upper``: flat arrays in the order of the model inputs
    (reshaped to ``graph.input_shape``).  ``config.method`` caps the effort:
    ``"crown"`` stops after CROWN; ``"alpha-crown"`` (default) continues with
    alpha-CROWN when CROWN fails.  ``deadline``: ``time.monotonic()`` value.
    """
    config = config or BoundConfig(method="alpha-crown")
    started = time.perf_counter()
    if deadline is not None and time.monotonic() > deadline:
        return ClauseOutcome(False, torch.full((clause.num_rows,), -float("inf")), "none", 0.0)
    dtype, device = graph.dtype_device()
    lower, upper = _box_tensors(graph, box_lower, box_upper, dtype, device)
    bounds, method = _bound_rows(graph, lower, upper, clause.matrix, clause.offset,
                                 [range(clause.num_rows)], config, deadline)
    proven = bool((bounds > PROOF_TOLERANCE).any())
    return ClauseOutcome(proven, bounds.cpu(), method, time.perf_counter() - started)


def prove_clauses(graph: Graph, box_lower, box_upper, clauses: Sequence[Clause],
                  config: BoundConfig | None = None, deadline: float | None = None) -> list[ClauseOutcome]:
    """:func:`prove_clause` for every clause of one input box.

    All single-row clauses are stacked into one spec matrix and bounded by one
    pass (and one joint alpha optimization); multi-row clauses are handled
    one by one.  Outcomes are returned in the order of ``clauses``; the
    stacked ones share the batch's ``method`` and wall time.
    """
    config = config or BoundConfig(method="alpha-crown")
    outcomes: list[ClauseOutcome | None] = [None] * len(clauses)
    single = [i for i, c in enumerate(clauses) if c.num_rows == 1]
    if single:
        started = time.perf_counter()
        dtype, device = graph.dtype_device()
        lower, upper = _box_tensors(graph, box_lower, box_upper, dtype, device)
        matrix = np.concatenate([clauses[i].matrix for i in single], axis=0)
        offset = np.concatenate([clauses[i].offset for i in single], axis=0)
        groups = [[j] for j in range(len(single))]
        if deadline is not None and time.monotonic() > deadline:
            bounds, method = torch.full((len(single),), -float("inf")), "none"
        else:
            bounds, method = _bound_rows(graph, lower, upper, matrix, offset, groups, config, deadline)
        elapsed = time.perf_counter() - started
        for j, i in enumerate(single):
            row = bounds[j:j + 1].cpu()
            outcomes[i] = ClauseOutcome(bool(row[0] > PROOF_TOLERANCE), row, method, elapsed)
    for i, clause in enumerate(clauses):
        if outcomes[i] is None:
            outcomes[i] = prove_clause(graph, box_lower, box_upper, clause, config, deadline)
    return outcomes  # type: ignore[return-value]


# ----------------------------------------------------------------- whole specs
@dataclass
class SpecBounds:
    """Incomplete verification of a whole spec, property by property.

    ``clause_lower[p][c]``: certified lower bound of ``max_j (C_cj y - d_cj)``
    over property ``p``'s box (the best row of clause ``c``; ``-inf`` when not
    bounded); a clause is proven when it exceeds :data:`PROOF_TOLERANCE`.
    ``roots[p]``: a batch-1 :class:`~bounds.engine.BoundResult` over ``p``'s
    box and stacked rows (intermediate boxes and row bounds), for BaB to start
    from; only properties that were bounded and are still open have one.
    """

    clause_lower: list[np.ndarray]
    roots: dict[int, BoundResult]
    method: dict[int, str]
    seconds: float = 0.0

    @classmethod
    def empty(cls, spec) -> "SpecBounds":
        return cls([np.full(len(p.clauses), -np.inf) for p in spec.properties], {}, {})

    def proven_clauses(self, index: int) -> np.ndarray:
        return self.clause_lower[index] > PROOF_TOLERANCE

    def proven_properties(self) -> list[int]:
        return [i for i, b in enumerate(self.clause_lower) if bool((b > PROOF_TOLERANCE).all())]

    @property
    def all_proven(self) -> bool:
        return len(self.proven_properties()) == len(self.clause_lower)

    def flat(self) -> list[float]:
        """Every clause's bound, properties in order (the ``Result.clause_bounds`` layout)."""
        return [float(v) for b in self.clause_lower for v in b]


def _layout_groups(properties, todo: Sequence[int]) -> list[list[int]]:
    """Properties with the same clause layout (rows per clause) can share one
    batched pass: their spec matrices stack to ``(G, S, n_out)``."""
    groups: dict[tuple, list[int]] = {}
    for i in todo:
        groups.setdefault(tuple(c.num_rows for c in properties[i].clauses), []).append(i)
    return [sorted(g, key=lambda i: _box_order(properties[i].box)) for g in groups.values()]


def _box_order(box) -> tuple:
    """Sort key putting similar boxes next to each other: the free (non-point)
    inputs first, then their lower ends.  A batched pass bounds the *union* of
    its boxes' unstable neurons, so similar neighbours keep that union small
    (nn4sys mscn, 800 boxes of one free input: see benchmarks note)."""
    free = np.flatnonzero(np.asarray(box.upper) > np.asarray(box.lower))
    return (tuple(free.tolist()), tuple(np.asarray(box.lower)[free].tolist()))


#: Properties in the first batch of a group; later batches grow (x4) within
#: the deadline, sized by the measured time per property.
_FIRST_CHUNK = 32


def _batch_limit(graph: Graph, num_rows: int, method: str) -> int:
    """Domains per pass: keep ``domains * rows * neurons`` near 2^24 (2^22
    for alpha-CROWN, which keeps parameters and gradients per domain)."""
    neurons = max(max((node.numel for node in graph.nodes), default=1), graph.input_numel, 1)
    budget = 2 ** 24 if method == "crown" else 2 ** 22
    return int(max(1, budget // max(1, num_rows * neurons)))


def bound_spec(graph: Graph, spec, method: str = "crown", deadline: float | None = None,
               previous: SpecBounds | None = None, config: BoundConfig | None = None) -> SpecBounds:
    """Bound every still-open property of ``spec`` with ``method`` (``"crown"``
    or ``"alpha-crown"``), batching properties of equal clause layout as the
    domain axis of one :func:`compute_bounds` call (nn4sys: 7000 boxes in one
    pass instead of 7000 passes).

    ``previous``: bounds from an earlier call; proven properties are skipped
    and every clause keeps the better of the old and new bound (both are
    sound, so their max is).  Stops starting new batches at ``deadline``.
    """
    started = time.perf_counter()
    config = config or BoundConfig()
    result = previous or SpecBounds.empty(spec)
    properties = spec.properties
    done = set(result.proven_properties())
    todo = [i for i in range(len(properties)) if i not in done]
    dtype, device = graph.dtype_device()
    shape = tuple(graph.input_shape)
    for group in _layout_groups(properties, todo):
        first = properties[group[0]]
        clause_of_row = np.concatenate([np.full(c.num_rows, k) for k, c in enumerate(first.clauses)])
        member = torch.as_tensor(clause_of_row[:, None] == np.arange(len(first.clauses))[None, :], device=device)
        limit = _batch_limit(graph, len(clause_of_row), method)
        begin, size, per_box = 0, min(limit, _FIRST_CHUNK), None
        while begin < len(group):
            now = time.monotonic()
            if deadline is not None and (now > deadline or (per_box is not None and now + per_box > deadline)):
                break
            if per_box is not None and deadline is not None:
                # a CROWN pass cannot be interrupted: size the chunk to what the clock still allows
                size = max(1, min(limit, 4 * size, int((deadline - now) / max(per_box, 1e-9))))
            elif per_box is not None:
                size = min(limit, 4 * size)
            chunk = group[begin:begin + size]
            begin += len(chunk)
            props = [properties[i] for i in chunk]
            lower = torch.as_tensor(np.stack([p.box.lower for p in props]), dtype=dtype, device=device)
            upper = torch.as_tensor(np.stack([p.box.upper for p in props]), dtype=dtype, device=device)
            matrix = torch.as_tensor(np.stack([np.concatenate([c.matrix for c in p.clauses]) for p in props]),
                                     dtype=dtype, device=device)
            offset = torch.as_tensor(np.stack([np.concatenate([c.offset for c in p.clauses]) for p in props]),
                                     dtype=dtype, device=device)
            bounds = _bound_batch(graph, lower.reshape((-1,) + shape), upper.reshape((-1,) + shape),
                                  matrix, offset, member, method, config, deadline, chunk, result.roots)
            per_box = (time.monotonic() - now) / len(chunk)
            # clause bound = best row of the clause; keep the better of old and new
            per_clause = bounds.unsqueeze(-1).masked_fill(~member, -float("inf")).amax(dim=1).cpu().numpy()
            for j, i in enumerate(chunk):
                result.clause_lower[i] = np.maximum(result.clause_lower[i], per_clause[j].astype(np.float64))
                result.method[i] = method
                if bool((result.clause_lower[i] > PROOF_TOLERANCE).all()):
                    result.roots.pop(i, None)
    result.seconds += time.perf_counter() - started
    return result


def _bound_batch(graph: Graph, lower, upper, matrix, offset, member, method: str, config: BoundConfig,
                 deadline, indices: Sequence[int], roots: dict) -> torch.Tensor:
    """Row lower bounds ``(G, S)`` of one batch of properties; records a
    batch-1 root result per property (reused by BaB and by a later
    alpha-CROWN call, whose rows keep the better bound)."""
    num_clauses = member.shape[1]
    if method == "crown":
        run_config = replace(config, method="crown")
    else:
        # a single clause needs one proven row per domain; several clauses need every row
        mode = "any" if num_clauses == 1 else "all"
        run_config = replace(config, method="alpha-crown", early_stop_margin=PROOF_TOLERANCE, early_stop_mode=mode)
    outcome = compute_bounds(graph, lower, upper, matrix, offset, config=run_config, deadline=deadline)
    bounds = outcome.lower
    for j, i in enumerate(indices):
        old = roots.get(i)
        row_lower = bounds[j:j + 1]
        if old is not None and old.lower.shape == row_lower.shape:
            row_lower = torch.maximum(row_lower, old.lower.to(row_lower))
        boxes = {name: (lo[j:j + 1], up[j:j + 1]) for name, (lo, up) in outcome.intermediate.items()}
        roots[i] = BoundResult(row_lower, None, boxes)
    return bounds
