"""Linear expressions over declared variables, shared by the VNN-LIB 1.0 and
2.0 parsers: arithmetic (``+ - *``) and turning a comparison into DNF atoms.

A variable is ``(is_output, flat index)``.  Errors go through a ``fail``
callable that each parser gives (its own locations and wording), so the
messages stay those of the parser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from vnnlib.dnf import Conjunction
from vnnlib.errors import VnnlibError

Variable = tuple[bool, int]  # (is_output, index)


@dataclass
class Linear:
    """``sum(coefficients[v] * v) + constant`` over declared variables."""

    coefficients: dict[Variable, float] = field(default_factory=dict)
    constant: float = 0.0

    def scaled(self, factor: float) -> "Linear":
        return Linear({v: c * factor for v, c in self.coefficients.items()}, self.constant * factor)

    def add(self, other: "Linear", sign: float = 1.0) -> None:
        for variable, value in other.coefficients.items():
            self.coefficients[variable] = self.coefficients.get(variable, 0.0) + sign * value
        self.constant += sign * other.constant


def sum_of(operands: list[tuple[int, Linear]]) -> Linear:
    """``(+ a b ...)``."""
    result = Linear()
    for _, operand in operands:
        result.add(operand)
    return result


def difference_of(operands: list[tuple[int, Linear]]) -> Linear:
    """``(- a)`` is ``-a``; ``(- a b ...)`` is ``a - b - ...``."""
    if len(operands) == 1:
        return operands[0][1].scaled(-1.0)
    result = operands[0][1].scaled(1.0)
    for _, operand in operands[1:]:
        result.add(operand, -1.0)
    return result


def product_of(operands: list[tuple[int, Linear]], fail: Callable[[int, str], VnnlibError],
               message: str) -> Linear:
    """``(* a b ...)``: linear only if at most one factor has variables; else
    ``fail(index of the second such factor, message)`` is raised."""
    factor = 1.0
    variable_part: Linear | None = None
    for operand_index, operand in operands:
        if not operand.coefficients:
            factor *= operand.constant
        elif variable_part is None:
            variable_part = operand
        else:
            raise fail(operand_index, message)
    if variable_part is None:
        return Linear({}, factor)
    return variable_part.scaled(factor)


def add_comparison(conjunction: Conjunction, index: int, sides: tuple[bool, ...], left: Linear, right: Linear,
                   fail: Callable[[str], VnnlibError], mixed_message: str,
                   several_inputs_message: Callable[[list[Variable]], str]) -> bool:
    """Add ``left op right`` to ``conjunction`` as rows ``sum(c * v) <= d``, one
    per side of ``op`` (True: ``left <= right``, False: ``left >= right``).

    A row over one input becomes an input bound, a row over outputs an output
    row; mixed rows and rows over several inputs are refused (``Spec`` cannot
    hold them).  Returns False when a row is constant-false (the disjunct is
    empty); constant-true rows are dropped.
    """
    difference = Linear(dict(left.coefficients), left.constant)
    difference.add(right, -1.0)  # left - right <= 0 for '<='
    for upper in sides:
        sign = 1.0 if upper else -1.0
        row = {v: sign * c for v, c in difference.coefficients.items() if c != 0.0}
        bound = 0.0 - sign * difference.constant  # never -0.0
        if not math.isfinite(bound) or not all(math.isfinite(c) for c in row.values()):
            raise fail("constraint with a non-finite coefficient or constant")
        if not row:
            if bound >= 0.0:
                continue  # constant-true row
            return False
        inputs = [v for v in row if not v[0]]
        if inputs and len(inputs) < len(row):
            raise fail(mixed_message)
        if len(inputs) > 1:
            raise fail(several_inputs_message(inputs))
        if inputs:
            (variable, factor), = row.items()
            conjunction.inputs.append((variable[1], factor > 0.0, bound / factor, index))
        else:
            conjunction.outputs.append((tuple(sorted((v[1], c) for v, c in row.items())), bound))
    return True
