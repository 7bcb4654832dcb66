"""BICCOS (bab/biccos.py): cut pool semantics, validity of every inferred cut
(checked by MIP on the cut's subdomain), the effect on a case that needs
branching, and BaB-with-BICCOS verdicts == MIP verdicts on random nets."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from bab.biccos import Biccos, BiccosSettings, CutPool
from bab.relu_split import ReluBabSettings, relu_split_bab
from bab.splits import Split
from bab.types import BabConfig
from bounds.cuts import cut_slack
from bounds.lp import interval_intermediate_bounds, mip_verdict
from tests.test_bab_vs_mip import exact_validator, make_case, mip_property_verdict


def test_pool_cut_semantics_dedup_and_subsumption():
    pool = CutPool({"fc0": "relu0", "fc1": "relu1"}, BiccosSettings(max_cuts=3))
    a, b, c = Split("fc0", 1, 0.0, +1), Split("fc1", 2, 0.0, -1), Split("fc1", 4, 0.0, +1)
    cut = pool.to_cut([a, b])
    # z_a - z_b <= 0  <=>  "not (z_a = 1 and z_b = 0)"
    assert sorted((t.node, t.index, t.coeff) for t in cut.terms) == [("relu0", 1, 1.0), ("relu1", 2, -1.0)]
    assert cut.rhs == 0.0
    assert pool.add([a, b, c]) and len(pool) == 1
    assert not pool.add([c, b, a])                   # duplicate
    assert pool.add([a, b]) and len(pool) == 1       # shorter cut replaces the implied longer one
    assert not pool.add([a, b, c])                   # implied by (a, b)
    assert pool.subsumed((c, b, a)) and not pool.subsumed((a, c))
    for i in range(5):
        pool.add([Split("fc0", 10 + i, 0.0, +1)])
    assert len(pool) == 3 and pool.stats["cuts_retired"] == 3


def test_own_tree_whole_paths_stay_out_of_that_trees_bound_passes():
    """A whole verified path of a tree is slack in every other domain of that
    tree (they hold the opposite of one of its splits), so that tree's
    passes leave it out; other trees and shortened cuts keep it."""
    graph = make_case(0, 2, [4], [1], 0.0)[0]
    pool = CutPool({n.inputs[0]: n.name for n in graph.nodes if n.op.op_type == "Relu"}, BiccosSettings())
    names, like = list(pool.relu_of), torch.zeros(())
    pool.add([Split(names[0], 0, 0.0, +1), Split(names[0], 1, 0.0, -1)], origin=7)
    pool.add([Split(names[0], 2, 0.0, +1)])
    own, own_indices = pool.constraints(graph, like, tree=7)
    other, other_indices = pool.constraints(graph, like, tree=8)
    assert own_indices == [1] and own.num_constraints == 1
    assert other_indices == [0, 1] and other.num_constraints == 2
    # multipliers of a pass map back to the pool entries they belong to
    pool.record(torch.tensor([[[0.5]]]), pool.version, own_indices)
    assert pool.entries[1].used and not pool.entries[0].used


def _nogood_holds(graph, lower, upper, matrix, offset, rows, splits) -> bool:
    """MIP on the subdomain of ``splits``: no counterexample there."""
    boxes = interval_intermediate_bounds(graph, lower, upper)
    boxes = {k: (lo.clone(), up.clone()) for k, (lo, up) in boxes.items()}
    for s in splits:
        lo, up = boxes[s.node]
        if s.direction > 0:
            lo.view(-1)[s.index] = max(float(lo.view(-1)[s.index]), 0.0)
        else:
            up.view(-1)[s.index] = min(float(up.view(-1)[s.index]), 0.0)
        if float(lo.view(-1)[s.index]) > float(up.view(-1)[s.index]):
            return True                               # empty subdomain
    for c in sorted(set(rows)):
        sel = [i for i, k in enumerate(rows) if k == c]
        verdict, _ = mip_verdict(graph, lower, upper, matrix[sel], offset[sel], intermediate=boxes)
        if verdict != "unsat":
            return False
    return True


def _branching_case():
    """Seed 10 of the BaB suite's generator: several hundred domains without cuts."""
    return make_case(10, 3, [8, 8], [1], -0.02)


def test_biccos_cuts_are_valid_and_reduce_domains():
    graph, lower, upper, matrix, offset, rows = _branching_case()
    validator = exact_validator(graph, matrix, offset, rows)
    args = (graph, lower, upper, matrix.astype(np.float32), offset.astype(np.float32), rows)
    torch.set_num_threads(1)
    # the BaB search itself is compared: no exact-MIP hand-over of the small net
    search = ReluBabSettings(mip_max_unstable=0)
    plain = relu_split_bab(*args, BabConfig(use_cuts=False), time.monotonic() + 120, validator, settings=search)
    # trees first (as on a hard instance): their cuts serve the main tree from the start
    hooks = Biccos(graph, BiccosSettings(multi_tree_max_seconds=2.0, tree_after_domains=0))
    with_cuts = relu_split_bab(*args, BabConfig(use_cuts=True), time.monotonic() + 120, validator, biccos=hooks,
                               settings=search)
    assert plain.status == with_cuts.status == "unsat"
    assert plain.stats["domains_visited"] >= 100
    summary = with_cuts.stats["biccos"]
    assert summary["cuts_inferred"] > 0 and summary["strengthened"] > 0
    # the main tree needs fewer domains once the trees' cuts are in
    assert with_cuts.stats["domains_visited"] < plain.stats["domains_visited"]
    # every pool cut is a verified subdomain's no-good: the MIP agrees
    entries = sorted(hooks.pool.entries, key=lambda e: len(e.splits))
    for entry in entries[:6] + entries[-2:]:
        assert _nogood_holds(graph, lower, upper, matrix, offset, rows, entry.splits)
    # and strengthening produced cuts shorter than the depth of the search
    assert min(len(e.splits) for e in entries) < plain.stats["max_depth"]


def test_cuts_hold_at_sampled_counterexamples():
    """On sat cases, inferred cuts hold at every sampled counterexample."""
    checked = 0
    for seed in range(40):
        graph, lower, upper, matrix, offset, rows = make_case(seed, 3, [8, 8], [1], 0.02)
        validator = exact_validator(graph, matrix, offset, rows)
        hooks = Biccos(graph, BiccosSettings(trees=()))
        relu_split_bab(graph, lower, upper, matrix.astype(np.float32), offset.astype(np.float32), rows,
                       BabConfig(use_cuts=True), time.monotonic() + 10, None, biccos=hooks)
        if not len(hooks.pool):
            continue
        x = torch.as_tensor(lower + (upper - lower) * np.random.default_rng(seed).uniform(size=(20000, 3)),
                            dtype=torch.float32)
        values = graph.forward(x, keep=True)
        margins = values[graph.output_name].double().numpy() @ matrix.T - offset
        bad = torch.as_tensor(np.all(margins <= 0, axis=1))
        if not bool(bad.any()):
            continue
        slack = cut_slack([e.cut for e in hooks.pool.entries], {k: v[bad] for k, v in values.items()}, graph)
        assert bool((slack >= 0).all())
        checked += 1
        if checked >= 3:
            return
    assert checked > 0, "no sat case with cuts"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2 ** 31 - 1), n_in=st.integers(2, 5),
       widths=st.lists(st.integers(3, 10), min_size=1, max_size=3),
       clause_rows=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       shift=st.floats(-0.3, 0.15))
def test_bab_with_biccos_verdict_equals_mip(seed, n_in, widths, clause_rows, shift):
    graph, lower, upper, matrix, offset, clause_of_row = make_case(seed, n_in, widths, clause_rows, shift)
    truth = mip_property_verdict(graph, lower, upper, matrix, offset, clause_of_row)
    validator = exact_validator(graph, matrix, offset, clause_of_row)
    hooks = Biccos(graph, BiccosSettings(multi_tree_max_seconds=2.0))
    outcome = relu_split_bab(graph, lower, upper, matrix.astype(np.float32), offset.astype(np.float32),
                             clause_of_row, BabConfig(use_cuts=True), time.monotonic() + 20.0, validator,
                             biccos=hooks)
    assert outcome.status == truth, (outcome.status, truth, outcome.stats)
    if outcome.status == "sat":
        assert validator(outcome.counterexample)
