"""Formulas in disjunctive normal form, and their assembly into a ``Spec``.

A formula is held as a list of *conjunctions* (its disjuncts); the empty list
is ``false`` and ``[Conjunction()]`` (no atoms) is ``true``.  A conjunction
keeps its input atoms and output atoms apart:

* an input atom is ``(i, is_upper, value, token)``: ``X_i <= value`` when
  ``is_upper`` else ``X_i >= value`` (``token`` locates it for messages);
* an output atom is ``(coefficients, offset)``: ``sum_j c_j * Y_j <= offset``
  with ``coefficients`` a tuple of ``(j, c_j)`` pairs, none zero.

``and`` distributes over ``or`` (the product of the children's disjunct
lists), ``or`` concatenates them.  The product is refused past
:data:`MAX_DISJUNCTS` disjuncts so that a pathological file fails with a clear
message instead of exhausting memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnnlib.spec import Clause, InputBox, Property

MAX_DISJUNCTS = 1_000_000

InputAtom = tuple[int, bool, float, int]
OutputAtom = tuple[tuple[tuple[int, float], ...], float]


@dataclass
class Conjunction:
    """``and`` of input bound atoms and output linear rows."""

    inputs: list[InputAtom] = field(default_factory=list)
    outputs: list[OutputAtom] = field(default_factory=list)

    def joined(self, other: "Conjunction") -> "Conjunction":
        return Conjunction(self.inputs + other.inputs, self.outputs + other.outputs)


DNF = list[Conjunction]


def conjoin(children: list[DNF], fail: Callable[[str], Exception]) -> DNF:
    """``and`` of DNF formulas: the product of their disjunct lists.

    Children with a single disjunct are merged in place first (the common
    case: a box of bound atoms), so the product only spans real disjunctions.
    ``fail(message)`` builds the error raised when the product is too large.
    """
    base = Conjunction()
    branching: list[DNF] = []
    for child in children:
        if not child:
            return []  # and with false
        if len(child) == 1:
            base.inputs.extend(child[0].inputs)
            base.outputs.extend(child[0].outputs)
        else:
            branching.append(child)
    size = 1
    for child in branching:
        size *= len(child)
        if size > MAX_DISJUNCTS:
            raise fail(
                f"the disjunctive normal form exceeds {MAX_DISJUNCTS} disjuncts; "
                "expected fewer nested or/and combinations"
            )
    if branching and not base.inputs and not base.outputs:
        result, branching = branching[0], branching[1:]  # nothing to distribute
    else:
        result = [base]
    for child in branching:
        result = [left.joined(right) for left in result for right in child]
    return result


def disjoin(children: list[DNF], fail: Callable[[str], Exception]) -> DNF:
    """``or`` of DNF formulas: the concatenation of their disjunct lists."""
    result: DNF = []
    for child in children:
        result.extend(child)
    if len(result) > MAX_DISJUNCTS:
        raise fail(f"the disjunctive normal form exceeds {MAX_DISJUNCTS} disjuncts")
    return result


@dataclass
class SpecProblem(Exception):
    """A semantic problem found while assembling; the parser adds a location.

    ``token`` is the token index to point at, or ``None`` to point at the
    declaration of input ``variable``.
    """

    message: str
    token: int | None = None
    variable: int | None = None


def _input_box(conjunction: Conjunction, num_inputs: int, disjunct: int) -> tuple[list, list]:
    """Intersect the bound atoms of one disjunct into ``(lower, upper)``.

    ``disjunct`` is its 1-based number for messages (0 when there is only one).
    """
    lower = [-math.inf] * num_inputs
    upper = [math.inf] * num_inputs
    lower_token = [0] * num_inputs
    upper_token = [0] * num_inputs
    for index, is_upper, value, token in conjunction.inputs:
        if is_upper:
            if value < upper[index]:
                upper[index], upper_token[index] = value, token
        elif value > lower[index]:
            lower[index], lower_token[index] = value, token
    where = f" (in disjunct {disjunct})" if disjunct else ""
    for index in range(num_inputs):
        low, high = lower[index], upper[index]
        if low == -math.inf or high == math.inf:
            missing = "lower" if low == -math.inf else "upper"
            if low == -math.inf and high == math.inf:
                missing = "lower and upper"
            raise SpecProblem(
                f"input X_{index} has no {missing} bound{where}; every input needs "
                "both (<= X_i c) and (>= X_i c)",
                variable=index,
            )
        if low > high:
            raise SpecProblem(
                f"empty input box{where}: X_{index} has lower bound {low!r} > upper bound {high!r}",
                token=max(lower_token[index], upper_token[index]),
            )
    return lower, upper


def _clause(conjunction: Conjunction, num_outputs: int) -> Clause:
    rows = conjunction.outputs
    matrix = np.zeros((len(rows), num_outputs), dtype=np.float64)
    offset = np.empty(len(rows), dtype=np.float64)
    for row, (coefficients, constant) in enumerate(rows):
        for index, value in coefficients:
            matrix[row, index] = value
        offset[row] = constant
    return Clause(matrix=matrix, offset=offset)


def assemble(disjuncts: DNF, num_inputs: int, num_outputs: int) -> list[Property]:
    """Group disjuncts by input box into properties, in order of first use.

    Raises :class:`SpecProblem` for a disjunct whose box is open or empty.
    """
    properties: dict[tuple, Property] = {}
    several = len(disjuncts) > 1
    for number, conjunction in enumerate(disjuncts):
        lower, upper = _input_box(conjunction, num_inputs, number + 1 if several else 0)
        key = (tuple(lower), tuple(upper))
        group = properties.get(key)
        if group is None:
            box = InputBox(lower=np.array(lower, dtype=np.float64),
                           upper=np.array(upper, dtype=np.float64))
            group = properties[key] = Property(box=box, clauses=[])
        group.clauses.append(_clause(conjunction, num_outputs))
    return list(properties.values())
