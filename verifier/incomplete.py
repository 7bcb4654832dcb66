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

from bounds.engine import BoundConfig, compute_bounds
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


def _graph_dtype(graph: Graph) -> tuple[torch.dtype, torch.device]:
    for node in graph.nodes:
        for value in vars(node.op).values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value.dtype, value.device
    return torch.float32, torch.device("cpu")


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
    dtype, device = _graph_dtype(graph)
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
        dtype, device = _graph_dtype(graph)
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
