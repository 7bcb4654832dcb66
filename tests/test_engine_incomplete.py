"""verifier.incomplete: CROWN then alpha-CROWN per clause, batched single-row clauses."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)  # small ops: thread hand-off costs more than it saves

from bounds.engine import BoundConfig
from verifier.incomplete import PROOF_TOLERANCE, prove_clause, prove_clauses
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib
from vnnlib.spec import Clause

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def load(onnx_path: str, vnnlib_path: str):
    return load_onnx(BENCH / onnx_path), parse_vnnlib(BENCH / vnnlib_path).properties[0]


def test_crown_proves_every_clause_of_unsat_mnist_property():
    graph, prop = load("2022_mnist_fc/onnx/mnist-net_256x4.onnx", "2022_mnist_fc/vnnlib/prop_0_0.03.vnnlib")
    outcomes = prove_clauses(graph, prop.box.lower, prop.box.upper, prop.clauses)
    assert len(outcomes) == len(prop.clauses) == 9
    assert all(o.proven and o.method == "crown" for o in outcomes)
    assert all(o.lower_bounds.shape == (1,) and float(o.lower_bounds[0]) > 0.9 for o in outcomes)


def test_alpha_proves_rows_crown_cannot():
    graph, prop = load("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_9_0.05.vnnlib")
    crown = prove_clauses(graph, prop.box.lower, prop.box.upper, prop.clauses, BoundConfig(method="crown"))
    alpha = prove_clauses(graph, prop.box.lower, prop.box.upper, prop.clauses)
    gained = [i for i, (c, a) in enumerate(zip(crown, alpha)) if a.proven and not c.proven]
    assert gained, "alpha-CROWN should prove some clause CROWN leaves open"
    for c, a in zip(crown, alpha):
        assert float(a.lower_bounds[0]) >= float(c.lower_bounds[0]) - 1e-6
        assert a.proven == bool(a.lower_bounds[0] > PROOF_TOLERANCE)
    assert all(alpha[i].method == "alpha-crown" for i in gained)


def test_sat_property_is_never_proven():
    """prop_0 of mnist 256x2 at eps 0.05 is sat: some clause must stay open."""
    graph, prop = load("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_0_0.05.vnnlib")
    outcomes = prove_clauses(graph, prop.box.lower, prop.box.upper, prop.clauses)
    assert not all(o.proven for o in outcomes)


def test_multi_row_clause_and_deadline():
    graph, prop = load("2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "2022_acasxu/vnnlib/prop_3.vnnlib")
    clause = prop.clauses[0]
    assert clause.num_rows == 4
    outcome = prove_clause(graph, prop.box.lower, prop.box.upper, clause)
    assert outcome.lower_bounds.shape == (4,)
    assert outcome.method == "alpha-crown" and not outcome.proven  # needs input splitting
    late = prove_clause(graph, prop.box.lower, prop.box.upper, clause, deadline=time.monotonic() - 1)
    assert late.method == "none" and not late.proven


def test_trivial_clause_on_box_is_proven():
    """A clause whose first row is violated by a margin on the whole box."""
    graph, prop = load("2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "2022_acasxu/vnnlib/prop_3.vnnlib")
    matrix = np.zeros((2, 5))
    matrix[0, 0], matrix[1, 1] = 1.0, 1.0
    clause = Clause(matrix, np.array([-1e4, 0.0]))  # y0 <= -1e4 is impossible near the box
    outcome = prove_clause(graph, prop.box.lower, prop.box.upper, clause)
    assert outcome.proven and outcome.method == "crown"
