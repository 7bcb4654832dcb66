"""Print a :class:`Spec` back as VNN-LIB text.

The output is one ``(assert (or ...))`` with a disjunct per (property,
clause) pair, each disjunct the conjunction of the property's box bounds and
the clause's rows.  Numbers are written with ``repr`` so that parsing the text
gives back bit-identical float64 values.  A property without clauses is
dropped (its unsafe set is empty), and a spec without any clause becomes
``(assert false)``.
"""
from __future__ import annotations

from vnnlib.spec import Spec


def _number(value: float) -> str:
    return repr(float(value))


def _row(coefficients, offset: float) -> str:
    """``(<= sum_j c_j * Y_j  d)`` for one clause row."""
    terms = [f"(* {_number(c)} Y_{j})" for j, c in enumerate(coefficients) if c != 0.0]
    if not terms:
        left = "0.0"
    elif len(terms) == 1:
        left = terms[0]
    else:
        left = f"(+ {' '.join(terms)})"
    return f"(<= {left} {_number(offset)})"


def format_vnnlib(spec: Spec) -> str:
    """VNN-LIB text whose parse has the same properties, clauses and rows
    (a row with all-zero coefficients is written as a constant comparison,
    so it is dropped or decided when read back)."""
    lines = [f"; written by nnverify from {spec.source or 'a Spec'}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(spec.num_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(spec.num_outputs)]
    disjuncts = []
    for prop in spec.properties:
        box = " ".join(
            f"(>= X_{i} {_number(low)}) (<= X_{i} {_number(high)})"
            for i, (low, high) in enumerate(zip(prop.box.lower, prop.box.upper))
        )
        for clause in prop.clauses:
            rows = " ".join(_row(c, d) for c, d in zip(clause.matrix, clause.offset))
            disjuncts.append(f"  (and {box} {rows})")
    if disjuncts:
        lines += ["(assert (or", *disjuncts, "))"]
    else:
        lines.append("(assert false)")
    return "\n".join(lines) + "\n"
