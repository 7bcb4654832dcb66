"""The normalized property: a union of (input box, output DNF) pairs.

VNN-LIB describes the *unsafe* set.  ``Spec`` holds it as a list of
:class:`Property` pairs; each pairs an :class:`InputBox` with a disjunction of
:class:`Clause` objects, each clause a conjunction ``matrix @ y <= offset``.
The property holds (``unsat``) when for every pair and every clause, no input
of the box yields an output satisfying all rows of the clause.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class InputBox:
    """Per-input bounds in the flattened order of ``X_0 .. X_{n-1}``."""

    lower: np.ndarray  # (n_in,) float64
    upper: np.ndarray  # (n_in,) float64

    @property
    def num_inputs(self) -> int:
        return int(self.lower.shape[0])


@dataclass
class Clause:
    """Conjunction ``matrix @ y <= offset`` over the flattened outputs."""

    matrix: np.ndarray  # (k, n_out) float64
    offset: np.ndarray  # (k,) float64

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])


@dataclass
class Property:
    """One input box and the output clauses (a DNF) that are unsafe on it."""

    box: InputBox
    clauses: list[Clause]


@dataclass
class Spec:
    properties: list[Property]
    num_inputs: int
    num_outputs: int
    source: str = ""  # file name or "<string>", for messages
    meta: dict = field(default_factory=dict)

    @property
    def num_clauses(self) -> int:
        return sum(len(p.clauses) for p in self.properties)
