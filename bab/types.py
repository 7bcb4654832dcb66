"""Plain data shared by every branch-and-bound strategy.

A BaB run decides one :class:`~vnnlib.spec.Property` (an input box and a
disjunction of unsafe clauses).  Rows of all clauses are stacked into one spec
matrix; ``clause_of_row[j]`` says which clause row ``j`` belongs to.  A domain
is *verified* when every clause has at least one row whose certified lower
bound of ``C_j y - d_j`` exceeds the proof tolerance (the clause, a
conjunction, cannot hold anywhere in the domain).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: A row counts as violated on a domain only when its lower bound exceeds this.
PROOF_TOLERANCE = 1e-5


@dataclass
class BabConfig:
    """Knobs of the branch-and-bound search; ``None`` means zero-config (chosen
    from the instance by :mod:`bab.strategy`)."""

    strategy: str = "auto"             # "auto" | "input-split" | "relu-split" | "genbab"
    batch_size: int | None = None      # domains bounded per pass
    branching: str | None = None       # e.g. "babsr", "fsb", "input-gradient", "bbps"
    alpha_iterations: int | None = None
    max_domains: int = 2_000_000       # queue cap; above it the search goes depth-first
    attack_interval: int = 5           # attack the worst domains every N batches
    use_cuts: bool | None = None       # BICCOS
    use_lookup_table: bool = True      # GenBaB branching points
    verbose: bool = False


@dataclass
class BabOutcome:
    """``status``: ``"unsat"`` (every domain verified), ``"sat"`` (a validated
    counterexample), ``"timeout"`` (deadline) or ``"unknown"`` (gave up, e.g.
    memory cap or an operator without relaxation)."""

    status: str
    counterexample: np.ndarray | None = None  # flattened input point
    stats: dict = field(default_factory=dict)  # domains_visited, max_depth, time per phase...


#: Validates a candidate input (flattened, float64) on the original model:
#: returns True only for a confirmed counterexample.
Validator = Callable[[np.ndarray], bool]
