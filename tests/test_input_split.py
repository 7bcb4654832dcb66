"""Input-split BaB: verdicts equal the exact MIP verdict on random tiny ReLU
nets, several roots searched together agree with one-by-one searches, and
real ACAS Xu instances are decided through the pipeline."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bab.input_branching import split_boxes, split_scores
from bab.input_split import ClauseLayout, bound_boxes, input_split_bab, target_rows
from bab.types import PROOF_TOLERANCE, BabConfig
from bounds.graph import Graph
from bounds.lp import mip_verdict
from tests.nets import seeded_relu_net

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
ACAS = BENCHMARKS / "2022_acasxu"

torch.set_num_threads(1)


def make_mlp(widths: list[int], seed: int) -> Graph:
    """Float64 Linear/ReLU chain with unscaled random weights."""
    return seeded_relu_net(widths, seed, torch.float64, bias_scale=0.5, fan_in_scaled=False)


def exact_validator(graph: Graph, lower, upper, clauses):
    """A point is a counterexample when it is in the box and some clause holds
    (float64 forward pass: the tiny nets are float64)."""
    def check(x: np.ndarray) -> bool:
        if np.any(x < lower) or np.any(x > upper):
            return False
        y = graph.forward(torch.as_tensor(x, dtype=torch.float64)[None])[0].numpy()
        return any(bool(np.all(m @ y <= d)) for m, d in clauses)
    return check


@st.composite
def instances(draw):
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(2, 6), min_size=1, max_size=2))
    n_out = draw(st.integers(2, 3))
    seed = draw(st.integers(0, 10 ** 6))
    rng = np.random.default_rng(seed)
    center = rng.uniform(-1, 1, n_in)
    radius = rng.uniform(0.05, 1.0, n_in)
    rows = [draw(st.integers(1, 2)) for _ in range(draw(st.integers(1, 2)))]
    clauses = [(rng.normal(size=(k, n_out)), rng.normal(size=k) * draw(st.sampled_from([0.3, 1.0, 3.0])))
               for k in rows]
    return [n_in, *hidden, n_out], seed, center - radius, center + radius, clauses


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(instances())
def test_verdict_equals_mip(case):
    widths, seed, lower, upper, clauses = case
    graph = make_mlp(widths, seed)
    expected = "unsat"
    for matrix, offset in clauses:
        verdict, _ = mip_verdict(graph, lower, upper, matrix, offset)
        if verdict == "sat":
            expected = "sat"
    matrix = np.concatenate([m for m, _ in clauses])
    offset = np.concatenate([d for _, d in clauses])
    clause_of_row = [k for k, (m, _) in enumerate(clauses) for _ in range(m.shape[0])]
    outcome = input_split_bab(graph, lower, upper, matrix, offset, clause_of_row, BabConfig(),
                              time.monotonic() + 10, exact_validator(graph, lower, upper, clauses))
    assert outcome.status == expected, (widths, seed, outcome.stats)
    if expected == "sat":
        assert exact_validator(graph, lower, upper, clauses)(outcome.counterexample)


def test_no_validator_never_answers_sat():
    graph = make_mlp([2, 4, 2], 3)
    lower, upper = -np.ones(2), np.ones(2)
    # y0 - y1 <= 1e6 holds everywhere: sat with a validator, never without one
    outcome = input_split_bab(graph, lower, upper, np.array([[1.0, -1.0]]), np.array([1e6]), [0],
                              BabConfig(), time.monotonic() + 0.5, None)
    assert outcome.status == "timeout"
    found = input_split_bab(graph, lower, upper, np.array([[1.0, -1.0]]), np.array([1e6]), [0],
                            BabConfig(), time.monotonic() + 5, exact_validator(graph, lower, upper,
                                                                            [(np.array([[1.0, -1.0]]), np.array([1e6]))]))
    assert found.status == "sat"


def test_many_roots_in_one_search_agree_with_one_by_one():
    graph = make_mlp([2, 8, 8, 3], 11)
    rng = np.random.default_rng(5)
    centers = rng.uniform(-1, 1, (12, 2))
    lower, upper = centers - 0.2, centers + 0.2
    matrix = np.array([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]]).repeat(12, 0) * rng.uniform(0.5, 2, (12, 1, 1))
    offset = rng.normal(size=(12, 2))
    layout = [0, 0]  # one clause: both rows must hold
    singles = []
    for p in range(12):
        clauses = [(matrix[p], offset[p])]
        singles.append(input_split_bab(graph, lower[p], upper[p], matrix[p], offset[p], layout, BabConfig(),
                                       time.monotonic() + 10, exact_validator(graph, lower[p], upper[p], clauses)).status)
    assert "sat" in singles and "unsat" in singles  # the instance exercises both answers
    unsat = [p for p, s in enumerate(singles) if s == "unsat"]
    together = input_split_bab(graph, lower[unsat], upper[unsat], matrix[unsat], offset[unsat], layout,
                               BabConfig(), time.monotonic() + 10, None)
    assert together.status == "unsat"
    assert together.stats["roots"] == len(unsat)

    def any_root(x):
        for p in range(12):
            clauses = [(matrix[p], offset[p])]
            if exact_validator(graph, lower[p], upper[p], clauses)(x):
                return True
        return False
    assert input_split_bab(graph, lower, upper, matrix, offset, layout, BabConfig(), time.monotonic() + 10,
                           any_root).status == "sat"


def test_bounds_enclose_samples_and_coefficients_are_linear_bounds():
    graph = make_mlp([3, 6, 5, 2], 7)
    gen = torch.Generator().manual_seed(0)
    lower = torch.rand(20, 3, generator=gen, dtype=torch.float64) - 1
    upper = lower + torch.rand(20, 3, generator=gen, dtype=torch.float64)
    spec = torch.tensor([[1.0, -1.0], [-0.5, 2.0]], dtype=torch.float64).expand(20, -1, -1)
    offset = torch.tensor([0.1, -0.2], dtype=torch.float64).expand(20, -1)
    for alpha in (0, 3):
        bound, coeffs = bound_boxes(graph, lower, upper, spec, offset, alpha)
        points = lower.unsqueeze(1) + torch.rand(20, 200, 3, generator=gen, dtype=torch.float64) * (upper - lower).unsqueeze(1)
        y = graph.forward(points.reshape(-1, 3)).reshape(20, 200, 2)
        values = torch.einsum("bso,bpo->bps", spec, y) - offset.unsqueeze(1)
        assert bool((values >= bound.unsqueeze(1) - 1e-9).all())
        assert coeffs.shape == (20, 2, 3)


def test_split_and_target_rows():
    lower = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    upper = torch.tensor([[1.0, 4.0], [3.0, 3.0]])
    coeffs = torch.tensor([[5.0, 1.0], [0.0, -1.0]])
    scores = split_scores(coeffs, lower, upper)
    dims = scores.argmax(dim=1)
    assert dims.tolist() == [0, 1]  # 5*1 > 1*4; 0*2 < 1*1
    child_lower, child_upper = split_boxes(lower, upper, dims)
    assert child_upper[0].tolist() == [0.5, 4.0] and child_lower[2].tolist() == [0.5, 0.0]
    assert child_upper[1].tolist() == [3.0, 2.5] and child_lower[3].tolist() == [1.0, 2.5]
    layout = ClauseLayout.from_rows([0, 0, 1], torch.float32, "cpu")
    bounds = torch.tensor([[-1.0, 0.5, 1.0], [-1.0, -0.5, 1.0], [-1.0, -2.0, -3.0], [PROOF_TOLERANCE, 0.0, 1.0]])
    verified, key, row = target_rows(layout, bounds)
    assert verified.tolist() == [True, False, False, False]
    # box 2: clause 1 (best row -3) is worse than clause 0 (best row -1)
    assert row[1:].tolist() == [1, 2, 0]
    assert key[1:].tolist() == pytest.approx([-0.5, -3.0, PROOF_TOLERANCE])


# ------------------------------------------------------------ real instances
def _acas(net: str, prop: str) -> tuple[Path, Path]:
    return ACAS / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx", ACAS / "vnnlib" / f"{prop}.vnnlib"


@pytest.mark.parametrize("net, prop, attack, expected", [
    ("1_1", "prop_1", True, "unsat"),
    ("1_6", "prop_3", True, "unsat"),
    ("1_9", "prop_4", False, "sat"),   # no attack stage: BaB itself must find it
])
def test_acasxu_through_pipeline(net, prop, attack, expected):
    from verifier.config import VerifyConfig
    from verifier.pipeline import run

    model, vnnlib = _acas(net, prop)
    result = run(model, vnnlib, VerifyConfig(timeout=30, threads=1, attack=attack))
    assert result.status == expected, result.message
    bab = result.stats.get("bab")
    if bab is None:
        # alpha-CROWN may prove an unsat one before BaB when the machine is quiet enough
        assert expected == "unsat" and result.stats.get("proven_by") in ("crown", "alpha-crown"), result.message
    else:
        assert bab["strategy"] == "input-split" and bab["domains_visited"] >= 1 and "time_bound" in bab
    if expected == "sat":
        assert bab is not None  # without attacks, only BaB can find it
        assert result.counterexample is not None and "BaB" in result.message


@pytest.mark.slow
def test_sigterm_during_bab_writes_a_result_file(tmp_path):
    """SIGTERM while BaB runs (prop_6 takes several seconds) still writes ``timeout``."""
    model, vnnlib = _acas("1_1", "prop_6")
    results = tmp_path / "out.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-m", "verifier", "run", str(model), str(vnnlib), "--no-attack",
                              "--verbose", "--threads", "1", "--results-file", str(results)],
                             cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stderr:
            if "strategy input-split" in line:
                break
        time.sleep(0.5)
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=20)
        assert time.monotonic() - sent < 3.0  # 1 s target; slack for a loaded machine
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 2
    assert results.read_text().strip() == "timeout"


def test_cli_bab_flags_reach_the_search(tmp_path):
    from verifier.cli import main

    model, vnnlib = _acas("1_1", "prop_1")
    out = tmp_path / "r.json"
    code = main(["run", str(model), str(vnnlib), "--threads", "1", "--no-attack", "--bab-strategy", "input-split",
                 "--batch-size", "64", "--branching", "coefficient", "--json", str(out)])
    assert code == 0
    bab = json.loads(out.read_text())["stats"]["bab"]
    assert bab["batch_size"] == 64 and bab["branching"] == "coefficient"


def test_blend_rule_is_default_for_smooth_nets_and_proves_lsnc():
    """2024_lsnc quadrotor2d_state_16 (Sin/Cos/products; unsat): pure coefficient
    scoring never split two wide dimensions (757k boxes, no proof in 40 s); the
    default for smooth nets, "blend", proves it within a few thousand boxes.
    ReLU-only nets keep "coefficient"."""
    from bab.input_split import resolve_settings
    from verifier.onnx_import import load_onnx
    from vnnlib import parse_vnnlib

    graph = load_onnx(BENCHMARKS / "2024_lsnc/onnx/quadrotor2d_state.onnx")
    assert resolve_settings(graph, BabConfig()).branching == "blend"
    acas, _ = _acas("1_1", "prop_1")
    assert resolve_settings(load_onnx(acas), BabConfig()).branching == "coefficient"
    prop = parse_vnnlib(BENCHMARKS / "2024_lsnc/vnnlib/quadrotor2d_state_16.vnnlib").properties[0]
    rows = [k for k, c in enumerate(prop.clauses) for _ in range(len(c.offset))]
    outcome = input_split_bab(graph, prop.box.lower, prop.box.upper,
                              np.concatenate([c.matrix for c in prop.clauses]),
                              np.concatenate([c.offset for c in prop.clauses]), rows,
                              BabConfig(), deadline=time.monotonic() + 30)
    assert outcome.status == "unsat"
    assert outcome.stats["domains_visited"] < 20000


def test_blend_scores_prefer_a_relatively_wide_dimension():
    coeffs = torch.tensor([[2.0, 0.0015]])
    lower, upper = torch.zeros(1, 2), torch.tensor([[0.001, 1.0]])
    root = torch.ones(1, 2)
    blend = split_scores(coeffs, lower, upper, root, "blend")
    # coefficient scores 0.002 vs 0.0015 pick dim 0; dim 1 is 1000x wider relative to its root
    assert int(split_scores(coeffs, lower, upper, root, "coefficient").argmax()) == 0
    assert int(blend.argmax()) == 1
    coeffs = torch.tensor([[10.0, 0.0001]])
    lower, upper = torch.zeros(1, 2), torch.tensor([[0.5, 1.0]])
    # a dominant coefficient score still wins when widths are comparable
    assert int(split_scores(coeffs, lower, upper, root, "blend").argmax()) == 0
