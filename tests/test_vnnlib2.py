"""VNN-LIB 2.0 queries written for dev networks parse to the same Spec as the
1.0 files of the benchmark set (robustness, disjunctive outputs, several input
boxes), plus the standard's scoping/typing errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vnnlib import parse_vnnlib, parse_vnnlib_string
from vnnlib.errors import VnnlibError
from vnnlib.v2 import is_v2, parse_any, parse_query_string, parse_v2_string

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
DATA = Path(__file__).resolve().parent / "data"


def _clause_key(clause):
    return (clause.matrix.tobytes(), clause.offset.tobytes())


def assert_same_spec(a, b):
    assert (a.num_inputs, a.num_outputs) == (b.num_inputs, b.num_outputs)
    assert len(a.properties) == len(b.properties)
    for pa, pb in zip(a.properties, b.properties):
        np.testing.assert_array_equal(pa.box.lower, pb.box.lower)
        np.testing.assert_array_equal(pa.box.upper, pb.box.upper)
        assert sorted(map(_clause_key, pa.clauses)) == sorted(map(_clause_key, pb.clauses))


def test_acas_prop6_two_boxes_disjunctive_outputs():
    """Multi-box input region and a disjunction of output rows (ACAS Xu prop 6)."""
    v2 = parse_any(DATA / "acas_prop6_v2.vnnlib")
    v1 = parse_vnnlib(BENCH / "2022_acasxu/vnnlib/prop_6.vnnlib")
    assert len(v1.properties) == 2 and v1.num_clauses == 8
    assert_same_spec(v2, v1)
    assert v2.meta["vnnlib_version"] == "2.0"


def test_mnist_robustness_query():
    """Robustness: an L-inf box over a [1,784] image and the disjunction
    'some other class scores at least as high as class 0'."""
    v1 = parse_vnnlib(BENCH / "2022_mnist_fc/vnnlib/prop_0_0.05.vnnlib")
    box = v1.properties[0].box
    label = 4  # the property's true class (row of the 1.0 file)
    lines = ["(vnnlib-version <2.0>)",
             "(declare-network mnist (declare-input image float32 [1,784]) (declare-output logits float32 [1,10]))"]
    for i in range(784):
        lines.append(f"(assert (and (>= image[0,{i}] {float(box.lower[i])!r}) (<= image[0,{i}] {float(box.upper[i])!r})))")
    others = " ".join(f"(>= logits[0,{j}] logits[0,{label}])" for j in range(10) if j != label)
    lines.append(f"(assert (or {others}))")
    v2 = parse_v2_string("\n".join(lines))
    assert_same_spec(v2, v1)
    assert v2.num_clauses == 9


def test_ml4acopf_or_over_outputs_and_arithmetic():
    """Disjunction of output bounds (ml4acopf prop 12) with 2.0 arithmetic
    forms: (- a b), (* c x), == as two rows and scalar-shaped tensors."""
    v1 = parse_vnnlib(BENCH / "2023_ml4acopf/vnnlib/14_ieee_prop12.vnnlib")
    box = v1.properties[0].box
    n_in, n_out = v1.num_inputs, v1.num_outputs
    lines = ["(vnnlib-version <2.0>)",
             f"(declare-network opf (declare-input x Real [{n_in}]) (declare-output y Real [{n_out}]))"]
    for i in range(n_in):
        lo, hi = float(box.lower[i]), float(box.upper[i])
        if lo == hi:
            lines.append(f"(assert (== x[{i}] {lo!r}))")
        else:
            # (* -1.0 x) <= -lo is x >= lo
            lines.append(f"(assert (<= (* -1.0 x[{i}]) {-lo!r}))")
            lines.append(f"(assert (<= (- x[{i}] {hi!r}) 0))")
    lines.append("(assert (or (>= y[163] 0.01) (<= y[163] -0.01)))")
    v2 = parse_v2_string("\n".join(lines))
    assert_same_spec(v2, v1)
    assert v2.num_clauses == 2


def test_example_property_roundtrip_and_version_sniffing():
    v1_text = (Path(__file__).resolve().parents[1] / "examples" / "example_unsat.vnnlib").read_text()
    v2_text = """; the bundled example in 2.0 form
    (vnnlib-version <2.0>)
    (declare-network example (declare-input x Real [1,2] "x") (declare-output y Real [1,2]))
    (assert (>= x[0,0] -1.0)) (assert (<= x[0,0] 1.0))
    (assert (>= x[0,1] -1.0)) (assert (<= x[0,1] 1.0))
    (assert (<= (- y[0,0] y[0,1]) -1.058660))"""
    assert is_v2(v2_text) and not is_v2(v1_text)
    assert_same_spec(parse_v2_string(v2_text), parse_vnnlib_string(v1_text))
    query = parse_query_string(v2_text)
    assert [t.name for t in query.tensors()] == ["x", "y"]
    assert query.tensors()[0].onnx_name == "x" and query.tensors()[0].shape == (1, 2)


def test_multiple_networks_concatenate_variables():
    query = parse_query_string("""(vnnlib-version <2.0>)
        (declare-network f (declare-input a Real [2]) (declare-output b Real []))
        (declare-network g (equal-to f) (declare-input c Real [2]) (declare-output d Real []))
        (assert (and (>= a[0] 0) (<= a[0] 1) (>= a[1] 0) (<= a[1] 1)))
        (assert (and (>= c[0] 2) (<= c[0] 3) (>= c[1] 2) (<= c[1] 3)))
        (assert (>= b d))""")
    spec = query.spec
    assert [n.name for n in query.networks] == ["f", "g"] and query.networks[1].equal_to == "f"
    assert spec.num_inputs == 4 and spec.num_outputs == 2
    np.testing.assert_array_equal(spec.properties[0].box.lower, [0, 0, 2, 2])
    np.testing.assert_array_equal(spec.properties[0].clauses[0].matrix, [[-1.0, 1.0]])


@pytest.mark.parametrize("text, message", [
    ("(declare-network n (declare-input X Real [2]) (declare-output Y Real [1])) (assert (<= Y[0] 0))",
     "starts with (vnnlib-version"),
    ("(vnnlib-version <3.0>) (declare-network n (declare-input X Real [1]) (declare-output Y Real [1]))"
     " (assert (<= Y[0] 0))", "unsupported version"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [2]) (declare-output Y Real [1]))"
     " (assert (<= X[2] 0))", "out of range"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1,2]) (declare-output Y Real [1]))"
     " (assert (<= X[1] 0))", "rank 2"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1]) (declare-output Y Real [1]))"
     " (assert (<= Z[0] 0))", "undeclared variable 'Z'"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1]) (declare-output X Real [1]))"
     " (assert (<= X[0] 0))", "declared twice"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1]) (declare-output Y Real [1]))"
     " (assert (!= Y[0] 0))", "'!='"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1])\n"
     " (declare-hidden H Real [1] \"h\") (declare-output Y Real [1])) (assert (<= Y[0] 0))", "declare-hidden"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X int8 [1]) (declare-output Y Real [1]))"
     " (assert (<= Y[0] 0))", "element type"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1]) (declare-output Y Real [1]))"
     " (assert (<= (+ X[0] Y[0]) 0))", "mixes network inputs and outputs"),
    ("(vnnlib-version <2.0>) (declare-network n (declare-input X Real [1]) (declare-output Y Real [1]))"
     " (assert (<= Y[0] 0))", "X[0] has no lower and upper bound"),
])
def test_errors_name_the_problem(text, message):
    with pytest.raises(VnnlibError) as info:
        parse_v2_string(text)
    assert message in str(info.value)
    assert str(info.value).startswith("<string>:1:") or "\n" in text
