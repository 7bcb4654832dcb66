"""Properties built in Python, normalized into :class:`vnnlib.spec.Spec`.

A :class:`SpecBuilder` holds input regions (boxes) and the unsafe output set
as a disjunction of clauses ``C y <= d`` (the VNN-LIB reading: the property
holds when no input of any box reaches any clause)::

    >>> import numpy as np
    >>> from verifier.spec_builder import SpecBuilder as Spec
    >>> s = Spec.linf_ball(np.zeros(2), 0.1).robust(0)        # 2 inputs; class 0 must win
    >>> spec = s.build(num_outputs=3)
    >>> spec.num_clauses, spec.properties[0].box.upper.tolist()
    (2, [0.1, 0.1])
    >>> spec.properties[0].clauses[0].matrix.tolist()          # y_0 - y_1 <= 0 is unsafe
    [[1.0, -1.0, 0.0]]
    >>> both = Spec.box([0, 0], [1, 1]).unsafe_if([[1, 0]], [-5.0]) | Spec.box([2, 2], [3, 3]).unsafe_if([[1, 0]], [-5.0])
    >>> len(both.build(num_outputs=2).properties)
    2

* ``robust(label)``: unsafe when some other class scores at least as high:
  one single-row clause ``y_label - y_j <= 0`` per ``j != label``;
* ``unsafe_if(C, d)``: adds the clause ``C y <= d`` (several calls: ``or``);
* ``safe_if(c, d)`` for one row ``c y <= d`` that must hold: unsafe is ``c y >= d``;
* ``a | b``: the union of two properties (each keeps its own boxes and clauses).

Output rows may be left open (``robust`` without ``num_classes``) until
:meth:`build` learns the number of outputs from the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vnnlib.spec import Clause, InputBox, Property, Spec

ClauseMaker = Callable[[int], list[Clause]]


def _flat(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass
class _Part:
    boxes: list[InputBox]
    clause_makers: list[ClauseMaker] = field(default_factory=list)


@dataclass
class SpecBuilder:
    """A union of ``(boxes, unsafe clauses)`` parts; see the module docstring."""

    parts: list[_Part]

    # ----------------------------------------------------------- input regions
    @classmethod
    def box(cls, lower, upper) -> "SpecBuilder":
        """The box ``lower <= x <= upper`` (any shape; flattened row-major)."""
        lower, upper = _flat(lower), _flat(upper)
        if lower.shape != upper.shape:
            raise ValueError(f"lower has {lower.size} values, upper {upper.size}")
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ValueError("box bounds must be finite")
        if np.any(lower > upper):
            raise ValueError(f"empty box: lower > upper at index {int(np.argmax(lower > upper))}")
        return cls([_Part([InputBox(lower, upper)])])

    @classmethod
    def linf_ball(cls, center, epsilon: float, clip: tuple[float, float] | None = None) -> "SpecBuilder":
        """``{x : |x - center|_inf <= epsilon}``, intersected with ``clip = (lo, hi)``."""
        center = _flat(center)
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        lower, upper = center - epsilon, center + epsilon
        if clip is not None:
            lower, upper = np.clip(lower, *clip), np.clip(upper, *clip)
        return cls.box(lower, upper)

    @classmethod
    def boxes(cls, boxes) -> "SpecBuilder":
        """Several boxes ``[(lower, upper), ...]`` sharing the clauses added later."""
        built = [cls.box(lower, upper).parts[0].boxes[0] for lower, upper in boxes]
        if not built:
            raise ValueError("no boxes given")
        return cls([_Part(built)])

    # ---------------------------------------------------------- output clauses
    def _with(self, maker: ClauseMaker) -> "SpecBuilder":
        if len(self.parts) != 1:
            raise ValueError("add clauses before combining specs with |")
        part = self.parts[0]
        return SpecBuilder([_Part(part.boxes, part.clause_makers + [maker])])

    def unsafe_if(self, matrix, offset) -> "SpecBuilder":
        """Add the unsafe clause ``matrix @ y <= offset`` (a conjunction of rows)."""
        matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
        offset = np.atleast_1d(np.asarray(offset, dtype=np.float64)).reshape(-1)
        if matrix.shape[0] != offset.shape[0]:
            raise ValueError(f"matrix has {matrix.shape[0]} rows, offset {offset.shape[0]} values")

        def make(num_outputs: int) -> list[Clause]:
            if matrix.shape[1] != num_outputs:
                raise ValueError(f"clause has {matrix.shape[1]} columns, model has {num_outputs} outputs")
            return [Clause(matrix.copy(), offset.copy())]
        return self._with(make)

    def safe_if(self, row, bound: float) -> "SpecBuilder":
        """Require ``row @ y <= bound``: the unsafe clause is ``-row @ y <= -bound``."""
        row = _flat(row)
        return self.unsafe_if(-row[None, :], [-float(bound)])

    def robust(self, label: int, num_classes: int | None = None) -> "SpecBuilder":
        """Class ``label`` must score strictly highest: unsafe is ``y_j >= y_label`` for some ``j``."""
        def make(num_outputs: int) -> list[Clause]:
            n = num_classes or num_outputs
            if n != num_outputs:
                raise ValueError(f"num_classes={n} but the model has {num_outputs} outputs")
            if not 0 <= label < n:
                raise ValueError(f"label {label} out of range for {n} outputs")
            clauses = []
            for j in range(n):
                if j != label:
                    matrix = np.zeros((1, n))
                    matrix[0, label], matrix[0, j] = 1.0, -1.0
                    clauses.append(Clause(matrix, np.zeros(1)))
            return clauses
        return self._with(make)

    # -------------------------------------------------------------- combining
    def __or__(self, other: "SpecBuilder") -> "SpecBuilder":
        return SpecBuilder(self.parts + other.parts)

    def build(self, num_outputs: int, source: str = "<python>") -> Spec:
        """The normalized :class:`vnnlib.spec.Spec` for a model with ``num_outputs`` outputs."""
        properties = []
        num_inputs = self.parts[0].boxes[0].num_inputs
        for part in self.parts:
            if not part.clause_makers:
                raise ValueError("a spec part has no output clause: call robust(), unsafe_if() or safe_if()")
            clauses = [c for make in part.clause_makers for c in make(num_outputs)]
            for box in part.boxes:
                if box.num_inputs != num_inputs:
                    raise ValueError(f"boxes have {box.num_inputs} and {num_inputs} inputs")
                properties.append(Property(box=box, clauses=list(clauses)))
        return Spec(properties=properties, num_inputs=num_inputs, num_outputs=num_outputs, source=source)
