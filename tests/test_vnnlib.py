"""Tests of the VNN-LIB parser on the development benchmarks and on crafted text."""
from __future__ import annotations

import csv
import gzip
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnnlib import (Clause, InputBox, Property, Spec, VnnlibError, format_vnnlib,
                    parse_vnnlib, parse_vnnlib_string)
from vnnlib.dnf import MAX_DISJUNCTS

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _instance_rows() -> list[dict]:
    with open(BENCHMARKS / "instances.csv", newline="") as handle:
        return list(csv.DictReader(handle))


DEV_VNNLIB = sorted({row["vnnlib"] for row in _instance_rows()})


def _header(num_inputs: int = 2, num_outputs: int = 2) -> str:
    declarations = [f"(declare-const X_{i} Real)" for i in range(num_inputs)]
    declarations += [f"(declare-const Y_{j} Real)" for j in range(num_outputs)]
    return "\n".join(declarations) + "\n"


BOX = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 -1)) (assert (<= X_1 1))\n"


def _row(spec_clause: Clause, index: int = 0) -> tuple[list[float], float]:
    return spec_clause.matrix[index].tolist(), float(spec_clause.offset[index])


def _row_set(clause: Clause) -> set[tuple[tuple[float, ...], float]]:
    return {(tuple(map(float, row)), float(d)) for row, d in zip(clause.matrix, clause.offset)}


# -- every development property ------------------------------------------

def test_instances_csv_lists_75_instances_over_69_files():
    assert len(_instance_rows()) == 75
    assert len(DEV_VNNLIB) == 69
    assert set(NN4SYS_BIG) <= set(DEV_VNNLIB)


# The two big nn4sys files are checked (and timed) in their own tests below.
NN4SYS_BIG = ("2022_nn4sys/vnnlib/lindex_7000.vnnlib", "2022_nn4sys/vnnlib/cardinality_0_800_128.vnnlib.gz")


@pytest.mark.parametrize("relative", [name for name in DEV_VNNLIB if name not in NN4SYS_BIG])
def test_every_dev_property_parses_to_a_consistent_spec(relative):
    spec = parse_vnnlib(BENCHMARKS / relative)
    assert spec.source.endswith(relative)
    _check_consistent(spec)


def _check_consistent(spec: Spec) -> None:
    assert spec.properties and spec.num_clauses >= 1
    for prop in spec.properties:
        assert prop.box.lower.shape == prop.box.upper.shape == (spec.num_inputs,)
        assert prop.box.lower.dtype == np.float64
        assert np.all(np.isfinite(prop.box.lower)) and np.all(np.isfinite(prop.box.upper))
        assert np.all(prop.box.lower <= prop.box.upper)
        for clause in prop.clauses:
            assert clause.matrix.shape == (clause.num_rows, spec.num_outputs)
            assert clause.offset.shape == (clause.num_rows,)
            assert clause.num_rows >= 1  # no dev file has a clause without output rows


def test_acasxu_prop_1_box_and_row():
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu/vnnlib/prop_1.vnnlib")
    assert (spec.num_inputs, spec.num_outputs, len(spec.properties), spec.num_clauses) == (5, 5, 1, 1)
    box = spec.properties[0].box
    np.testing.assert_array_equal(box.lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(box.upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    # (>= Y_0 3.991125645861615) is the row -Y_0 <= -3.991125645861615
    assert _row(spec.properties[0].clauses[0]) == ([-1.0, 0, 0, 0, 0], -3.991125645861615)


def test_acasxu_prop_2_top_level_asserts_form_one_clause():
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu/vnnlib/prop_2.vnnlib")
    (clause,) = spec.properties[0].clauses
    # (<= Y_j Y_0) for j = 1..4: Y_j - Y_0 <= 0
    expected = np.zeros((4, 5))
    expected[:, 0] = -1.0
    expected[np.arange(4), np.arange(1, 5)] = 1.0
    np.testing.assert_array_equal(clause.matrix, expected)
    np.testing.assert_array_equal(clause.offset, np.zeros(4))


def test_acasxu_prop_6_two_boxes_times_four_clauses():
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu/vnnlib/prop_6.vnnlib")
    assert len(spec.properties) == 2 and spec.num_clauses == 8
    first, second = spec.properties
    np.testing.assert_array_equal(first.box.lower, [-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(first.box.upper, [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5])
    np.testing.assert_array_equal(second.box.lower, [-0.129289109, -0.499999896, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(second.box.upper, [0.700434925, -0.11140846, -0.499204121, 0.5, 0.5])
    for prop in spec.properties:
        assert [c.num_rows for c in prop.clauses] == [1, 1, 1, 1]
        for j, clause in enumerate(prop.clauses, start=1):
            row = np.zeros(5)
            row[j], row[0] = 1.0, -1.0  # (<= Y_j Y_0)
            assert _row(clause) == (row.tolist(), 0.0)


def test_acasxu_prop_8_disjunction_of_two_row_conjunctions():
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu/vnnlib/prop_8.vnnlib")
    (prop,) = spec.properties
    assert [c.num_rows for c in prop.clauses] == [2, 2, 2]
    # (and (<= Y_3 Y_0) (<= Y_3 Y_1))
    np.testing.assert_array_equal(prop.clauses[1].matrix, [[-1, 0, 0, 1, 0], [0, -1, 0, 1, 0]])


@pytest.mark.parametrize("name, eps, label", [("prop_0_0.03", 0.03, 4), ("prop_9_0.05", 0.05, 8)])
def test_mnist_fc_box_matches_eps_in_name_and_robustness_clauses(name, eps, label):
    spec = parse_vnnlib(BENCHMARKS / f"2022_mnist_fc/vnnlib/{name}.vnnlib")
    assert (spec.num_inputs, spec.num_outputs, len(spec.properties), spec.num_clauses) == (784, 10, 1, 9)
    box = spec.properties[0].box
    width = box.upper - box.lower
    assert box.lower.min() >= 0.0 and box.upper.max() <= 1.0  # clipped to the pixel range
    interior = (box.lower > 0.0) & (box.upper < 1.0)
    assert interior.sum() > 50
    np.testing.assert_allclose(width[interior], 2 * eps, atol=1e-6)  # float32-rounded files
    assert np.all(width <= 2 * eps + 1e-6) and np.all(width >= eps - 1e-6)
    others = [j for j in range(10) if j != label]
    for j, clause in zip(others, spec.properties[0].clauses):
        row = np.zeros(10)
        row[j], row[label] = -1.0, 1.0  # (>= Y_j Y_label)
        assert _row(clause) == (row.tolist(), 0.0)


def test_robustness_dnf_on_oval21_uses_le_form():
    spec = parse_vnnlib(BENCHMARKS / "2022_oval21/vnnlib/cifar_base_kw-img8095-eps0.010457516339869282.vnnlib")
    (prop,) = spec.properties
    assert spec.num_inputs == 3072 and len(prop.clauses) == 9
    # (<= Y_2 Y_0): Y_2 - Y_0 <= 0
    assert _row(prop.clauses[0]) == ([-1.0, 0, 1.0, 0, 0, 0, 0, 0, 0, 0], 0.0)


def test_marabou_conjunction_of_nine_asserts_is_one_clause_of_nine_rows():
    spec = parse_vnnlib(BENCHMARKS / "2021_marabou-cifar10/specs/"
                        "networkcifar10_small_index1783_eps0.024_target9_orig8.vnnlib")
    (prop,) = spec.properties
    (clause,) = prop.clauses
    assert clause.matrix.shape == (9, 10)
    np.testing.assert_array_equal(clause.matrix[:, 9], -np.ones(9))  # (>= Y_9 Y_j)


def test_ml4acopf_disjunction_over_outputs():
    spec = parse_vnnlib(BENCHMARKS / "2023_ml4acopf/vnnlib/14_ieee_prop12.vnnlib")
    assert (spec.num_inputs, spec.num_outputs, len(spec.properties)) == (22, 186, 1)
    prop = spec.properties[0]
    assert (prop.box.lower[0], prop.box.upper[0]) == (0.211212101, 0.213334836)
    assert (prop.box.lower[21], prop.box.upper[21]) == (0.0479741, 0.048456252)
    above, below = prop.clauses
    assert np.flatnonzero(above.matrix[0]).tolist() == [163] and above.matrix[0, 163] == -1.0
    assert above.offset[0] == -0.01  # (>= Y_163 0.01)
    assert below.matrix[0, 163] == 1.0 and below.offset[0] == -0.01  # (<= Y_163 -0.01)


def test_gcas_and_carvana_constant_rows():
    gcas = parse_vnnlib(BENCHMARKS / "2022_reach_prob_density/vnnlib/gcas_2.vnnlib")
    (clause,) = gcas.properties[0].clauses
    assert clause.num_rows == 2 and gcas.num_inputs == gcas.num_outputs == 14
    assert clause.matrix[0, 12] == 1.0 and clause.offset[0] == -2.2838113986655717
    assert clause.matrix[1, 0] == -1.0 and clause.offset[1] == 0.0  # (>= Y_0 -0.0)
    carvana = parse_vnnlib(BENCHMARKS / "2022_carvana_unet_2022/vnnlib/"
                           "spec_unet_simp_small_idx_917f262f1608_16_eps_0.00400.vnnlib")
    assert (carvana.num_inputs, carvana.num_outputs) == (5828, 1)
    assert _row(carvana.properties[0].clauses[0]) == ([1.0], 1314.0)


def test_lsnc_thirteen_clauses():
    spec = parse_vnnlib(BENCHMARKS / "2024_lsnc/vnnlib/quadrotor2d_state_16.vnnlib")
    assert (spec.num_inputs, spec.num_outputs, spec.num_clauses) == (6, 8, 13)
    # each disjunct of the (or ...) is conjoined with the top-level (assert (<= Y_1 1.3392))
    y_1_row = ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 1.3392)
    first, last = spec.properties[0].clauses[0], spec.properties[0].clauses[-1]
    assert _row_set(first) == {((1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), -1e-06), y_1_row}
    assert _row_set(last) == {((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0), -3.0000009536743164), y_1_row}


def _timed_parse(path: Path) -> tuple[float, float, Spec]:
    """Wall and process CPU time of one parse (CPU time is robust to a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    spec = parse_vnnlib(path)
    return time.perf_counter() - wall, time.process_time() - cpu, spec


def test_nn4sys_lindex_7000_boxes_and_parse_time():
    path = BENCHMARKS / "2022_nn4sys/vnnlib/lindex_7000.vnnlib"
    elapsed, cpu, spec = _timed_parse(path)
    print(f"\nlindex_7000.vnnlib ({path.stat().st_size} bytes) parsed in {elapsed:.3f} s wall, {cpu:.3f} s CPU")
    assert elapsed < 5.0  # generous; measured about 0.17 s CPU
    assert (spec.num_inputs, spec.num_outputs, len(spec.properties), spec.num_clauses) == (1, 1, 7000, 14000)
    _check_consistent(spec)
    first = spec.properties[0]
    assert (first.box.lower[0], first.box.upper[0]) == (0.0221642162650824, 0.0221669990569353)
    assert _row(first.clauses[0]) == ([1.0], 0.8149711401951119)
    assert _row(first.clauses[1]) == ([-1.0], -0.8177297799098686)
    assert all(len(p.clauses) == 2 for p in spec.properties)


def test_nn4sys_cardinality_gz_boxes_and_parse_time():
    path = BENCHMARKS / "2022_nn4sys/vnnlib/cardinality_0_800_128.vnnlib.gz"
    elapsed, cpu, spec = _timed_parse(path)
    print(f"\ncardinality_0_800_128.vnnlib.gz parsed in {elapsed:.3f} s wall, {cpu:.3f} s CPU")
    assert elapsed < 5.0  # generous; measured about 0.55 s CPU
    assert (spec.num_inputs, spec.num_outputs, len(spec.properties), spec.num_clauses) == (154, 1, 800, 1600)
    _check_consistent(spec)
    box = spec.properties[0].box
    assert (box.lower[4], box.upper[4]) == (1.0, 1.0)
    assert (box.lower[54], box.upper[54]) == (0.0046955705620348, 0.007498006336391)


# -- semantics on crafted text -------------------------------------------

def test_number_forms_and_comments():
    text = _header(3, 1) + """; a comment (with parentheses
    (assert (>= X_0 1e-3)) (assert (<= X_0 +3))   ; trailing comment )
    (assert (>= X_1 -.5)) (assert (<= X_1 .5))
    (assert (>= X_2 -2.)) (assert (<= X_2 1E+2))
    (assert (>= Y_0 -0.5e1))
    """
    spec = parse_vnnlib_string(text)
    box = spec.properties[0].box
    np.testing.assert_array_equal(box.lower, [1e-3, -0.5, -2.0])
    np.testing.assert_array_equal(box.upper, [3.0, 0.5, 100.0])
    assert _row(spec.properties[0].clauses[0]) == ([-1.0], 5.0)


def test_declarations_in_any_order_and_linear_terms():
    text = """(declare-const Y_1 Real) (declare-const X_1 Real) (declare-const Y_0 Real)
    (declare-const X_0 Real)
    (assert (and (<= (* 2 X_0) 4) (>= (* X_0 -1) -5) (>= X_0 -1) (= X_1 0.25)))
    (assert (<= (+ (* 3 Y_0) (- Y_1) 1) (- (* 0.5 Y_1) 2)))
    (assert (> (- Y_0 Y_1 Y_1) (/ 1 4)))
    """
    spec = parse_vnnlib_string(text)
    assert (spec.num_inputs, spec.num_outputs) == (2, 2)
    box = spec.properties[0].box
    # 2 X_0 <= 4 -> X_0 <= 2 ; -X_0 >= -5 -> X_0 <= 5 (no lower bound from it)
    assert (box.lower[0], box.upper[0]) == (-1.0, 2.0)
    assert (box.lower[1], box.upper[1]) == (0.25, 0.25)
    (clause,) = spec.properties[0].clauses
    # 3 Y_0 - Y_1 + 1 <= 0.5 Y_1 - 2  ->  3 Y_0 - 1.5 Y_1 <= -3
    assert _row(clause, 0) == ([3.0, -1.5], -3.0)
    # Y_0 - 2 Y_1 > 1/4 (strict read as >=)  ->  -Y_0 + 2 Y_1 <= -0.25
    assert _row(clause, 1) == ([-1.0, 2.0], -0.25)


def test_input_needs_lower_bound_from_some_atom():
    text = _header(1, 1) + "(assert (<= X_0 1)) (assert (>= (* -1 X_0) -3)) (assert (>= Y_0 0))"
    # -X_0 >= -3 is X_0 <= 3: still no lower bound
    with pytest.raises(VnnlibError, match="X_0 has no lower bound"):
        parse_vnnlib_string(text)


def test_nested_and_or_expand_to_dnf_and_group_by_box():
    text = _header(2, 2) + """
    (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
    (assert (>= X_1 0)) (assert (<= X_1 1))
    (assert (or (>= Y_0 1) (and (<= Y_1 0) (or (>= Y_0 Y_1) (<= Y_0 -1)))))
    """
    spec = parse_vnnlib_string(text)
    assert len(spec.properties) == 2
    for prop, (low, high) in zip(spec.properties, [(0.0, 1.0), (2.0, 3.0)]):
        np.testing.assert_array_equal(prop.box.lower, [low, 0.0])
        np.testing.assert_array_equal(prop.box.upper, [high, 1.0])
        assert [c.num_rows for c in prop.clauses] == [1, 2, 2]
        assert _row(prop.clauses[0]) == ([-1.0, 0.0], -1.0)
        assert _row(prop.clauses[1], 0) == ([0.0, 1.0], 0.0)
        assert _row(prop.clauses[1], 1) == ([-1.0, 1.0], 0.0)
        assert _row(prop.clauses[2], 1) == ([1.0, 0.0], -1.0)


def test_constant_rows_are_decided_exactly():
    text = _header(1, 1) + """(assert (>= X_0 0)) (assert (<= X_0 1))
    (assert (or (and (<= Y_0 Y_0) (>= Y_0 1))
                (and (<= 1 0) (>= Y_0 5))
                (and (<= (+ Y_0 1) Y_0) (>= Y_0 6))
                (and (= 2 (+ 1 1)) (<= Y_0 -2))))
    """
    spec = parse_vnnlib_string(text)
    (prop,) = spec.properties
    # true rows dropped; the two constant-false disjuncts are gone
    assert [_row(c) for c in prop.clauses] == [([-1.0], -1.0), ([1.0], -2.0)]


def test_all_disjuncts_false_gives_an_empty_spec():
    spec = parse_vnnlib_string(_header(1, 1) + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (< 1 0))")
    assert spec.properties == [] and spec.num_clauses == 0


def test_clause_without_output_rows_means_the_whole_box_is_unsafe():
    spec = parse_vnnlib_string(_header(1, 1) + "(assert (and (>= X_0 0) (<= X_0 1)))")
    (clause,) = spec.properties[0].clauses
    assert clause.matrix.shape == (0, 1)


def test_tightest_of_repeated_bounds_and_ignored_commands():
    text = "(set-logic QF_LRA)\n" + _header(1, 1) + """(assert (>= X_0 0)) (assert (>= X_0 0.5))
    (assert (<= X_0 2)) (assert (<= X_0 1.5)) (assert (>= Y_0 0)) (check-sat) (get-model) (exit)"""
    box = parse_vnnlib_string(text).properties[0].box
    assert (box.lower[0], box.upper[0]) == (0.5, 1.5)


def test_gzip_file_and_pathlike(tmp_path):
    text = _header() + BOX + "(assert (<= Y_0 Y_1))"
    path = tmp_path / "prop.vnnlib.gz"
    path.write_bytes(gzip.compress(text.encode()))
    spec = parse_vnnlib(path)
    assert spec.source == str(path) and _row(spec.properties[0].clauses[0]) == ([1.0, -1.0], 0.0)
    plain = tmp_path / "prop.vnnlib"
    plain.write_text(text)
    assert parse_vnnlib(str(plain)).num_clauses == 1


# -- rejections: one line naming file:line:col ---------------------------

REJECTIONS = [
    # (name, text, line, col, words that must appear)
    ("missing close", _header() + BOX + "(assert (<= Y_0 Y_1)\n", 6, 1, "never closed"),
    ("extra close", _header() + BOX + "(assert (<= Y_0 Y_1)))\n", 6, 22, "unexpected ')'"),
    ("unknown command", _header() + "(declare-fun X_2 Real)\n", 5, 2, "unknown command 'declare-fun'"),
    ("bad number", _header() + "(assert (<= X_0 1.2.3))\n", 5, 17, "bad number '1.2.3'"),
    ("bad number in term", _header() + "(assert (<= (* 2 X_0) 0x1))\n", 5, 23, "bad number '0x1'"),
    ("undeclared", _header() + BOX + "(assert (>= Y_2 0))\n", 6, 13, "undeclared variable 'Y_2'"),
    ("nonlinear", _header() + BOX + "(assert (>= (* Y_0 Y_1) 0))\n", 6, 20, "non-linear"),
    ("mixed X and Y", _header() + BOX + "(assert (>= Y_0 X_0))\n", 6, 9, "mixes inputs (X) and outputs (Y)"),
    ("general input", _header() + BOX + "(assert (<= (+ X_0 X_1) 1))\n", 6, 9,
     "several inputs (X_0, X_1)"),
    ("missing upper", _header() + "(assert (>= X_0 0)) (assert (>= X_1 0)) (assert (<= X_1 1))\n"
     "(assert (>= Y_0 0))", 1, 16, "X_0 has no upper bound"),
    ("empty box", _header() + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 2))\n"
     "(assert (<= X_1 1)) (assert (>= Y_0 0))", 6, 9, "X_1 has lower bound 2.0 > upper bound 1.0"),
    ("nan", _header() + "(assert (>= X_0 nan))\n", 5, 17, "bad number 'nan'"),
    ("inf", _header() + "(assert (<= X_0 -inf))\n", 5, 17, "bad number '-inf'"),
    ("overflow", _header() + "(assert (<= X_0 1e999))\n", 5, 17, "finite"),
    ("no assert", _header() + "; nothing\n", 5, 10, "no (assert ...) found"),
    ("gap in declarations", "(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n"
     "(assert (>= Y_0 0))", 2, 16, "X_2 is declared but X_1 is not"),
    ("duplicate declaration", _header() + "(declare-const X_1 Real)", 5, 16, "declared twice"),
    ("bad sort", "(declare-const X_0 Int)", 1, 20, "unsupported sort 'Int'"),
    ("three operands", _header() + "(assert (<= X_0 1 2))", 5, 19, "exactly two operands"),
    ("unknown operator", _header() + "(assert (not (<= X_0 1)))", 5, 10, "unknown operator 'not'"),
]


@pytest.mark.parametrize("name, text, line, col, words", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_name_line_and_column(name, text, line, col, words):
    with pytest.raises(VnnlibError) as caught:
        parse_vnnlib_string(text, source="bad.vnnlib")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"bad.vnnlib:{line}:{col}: "), message
    assert words in message, message


def test_dnf_explosion_is_refused():
    disjunction = "(or " + " ".join(f"(>= Y_0 {k})" for k in range(10)) + ")"
    text = _header(2, 1) + BOX + "(assert (and" + disjunction * 7 + "))"
    assert 10 ** 7 > MAX_DISJUNCTS
    with pytest.raises(VnnlibError, match=r"^<string>:5:10: the disjunctive normal form exceeds"):
        parse_vnnlib_string(text)


def test_file_errors_name_the_path(tmp_path):
    path = tmp_path / "broken.vnnlib"
    path.write_text(_header() + "(assert (<= X_0 1)")
    with pytest.raises(VnnlibError, match=re.escape(f"{path}:5:1: unbalanced parentheses")):
        parse_vnnlib(path)


# -- round trip ----------------------------------------------------------

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _specs(draw) -> Spec:
    num_inputs = draw(st.integers(1, 4))
    num_outputs = draw(st.integers(1, 4))
    properties = []
    seen_boxes = set()
    for _ in range(draw(st.integers(1, 3))):
        lower = np.array(draw(st.lists(_finite, min_size=num_inputs, max_size=num_inputs)))
        width = np.array(draw(st.lists(st.floats(0, 10), min_size=num_inputs, max_size=num_inputs)))
        upper = lower + width
        key = (tuple(lower), tuple(upper))
        if key in seen_boxes:  # identical boxes would be merged into one property
            continue
        seen_boxes.add(key)
        clauses = []
        for _ in range(draw(st.integers(1, 3))):
            rows = draw(st.integers(1, 3))
            matrix = np.array(draw(st.lists(
                st.lists(_finite, min_size=num_outputs, max_size=num_outputs), min_size=rows, max_size=rows)))
            matrix[np.abs(matrix) < 1e-300] = 0.0
            column = draw(st.integers(0, num_outputs - 1))
            matrix[:, column] += 1.5  # at least one non-zero per row...
            matrix[np.all(matrix == 0, axis=1), column] = 1.0  # ...even where a drawn -1.5 cancels the shift
            offset = np.array(draw(st.lists(_finite, min_size=rows, max_size=rows)))
            clauses.append(Clause(matrix=matrix, offset=offset))
        properties.append(Property(box=InputBox(lower=lower, upper=upper), clauses=clauses))
    return Spec(properties=properties, num_inputs=num_inputs, num_outputs=num_outputs)


@settings(max_examples=60, deadline=None)
@given(_specs())
def test_round_trip_through_text(spec):
    parsed = parse_vnnlib_string(format_vnnlib(spec))
    assert (parsed.num_inputs, parsed.num_outputs) == (spec.num_inputs, spec.num_outputs)
    assert len(parsed.properties) == len(spec.properties)
    for got, want in zip(parsed.properties, spec.properties):
        np.testing.assert_array_equal(got.box.lower, want.box.lower)
        np.testing.assert_array_equal(got.box.upper, want.box.upper)
        assert len(got.clauses) == len(want.clauses)
        for got_clause, want_clause in zip(got.clauses, want.clauses):
            np.testing.assert_array_equal(got_clause.matrix, want_clause.matrix)
            np.testing.assert_array_equal(got_clause.offset, want_clause.offset)


def test_round_trip_of_a_dev_file_is_exact():
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu/vnnlib/prop_6.vnnlib")
    again = parse_vnnlib_string(format_vnnlib(spec))
    for got, want in zip(again.properties, spec.properties, strict=True):
        np.testing.assert_array_equal(got.box.lower, want.box.lower)
        for got_clause, want_clause in zip(got.clauses, want.clauses, strict=True):
            np.testing.assert_array_equal(got_clause.matrix, want_clause.matrix)
