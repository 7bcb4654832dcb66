"""Falsification (onnxruntime stage and PGD) and counterexample validation,
on the bundled example and real ACAS Xu instances."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.attack import AttackStats, ort_falsify, pgd_falsify
from verifier.validate import OrtModel, in_box, read_model_bytes, snap_into_box, validate_point
from vnnlib import Clause, InputBox, Property, Spec, parse_vnnlib

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
EXAMPLES = REPO / "examples"
ACAS = BENCHMARKS / "2022_acasxu"


def _load(onnx_path: Path, vnnlib_path: Path):
    return OrtModel.load(onnx_path, read_model_bytes(onnx_path)), parse_vnnlib(vnnlib_path)


def _independent_check(onnx_path: Path, spec: Spec, cex) -> None:
    """Re-check a counterexample with a fresh onnxruntime session, not our wrapper."""
    session = ort.InferenceSession(read_model_bytes(onnx_path), providers=["CPUExecutionProvider"])  # .gz too
    model_input = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in model_input.shape]
    prop = spec.properties[cex.property_index]
    assert np.all(cex.inputs >= prop.box.lower) and np.all(cex.inputs <= prop.box.upper)
    y = session.run(None, {model_input.name: cex.inputs.astype(np.float32).reshape(shape)})[0].reshape(-1)
    np.testing.assert_array_equal(y.astype(np.float64), cex.outputs)
    clause = prop.clauses[cex.clause_index]
    assert np.all(clause.matrix @ y.astype(np.float64) <= clause.offset + 1e-9 * (1 + np.abs(clause.offset)))


@pytest.mark.parametrize("net, prop", [("ACASXU_run2a_1_9_batch_2000", "prop_4"),
                                       ("ACASXU_run2a_2_9_batch_2000", "prop_8")])
def test_ort_stage_falsifies_sat_acas_fast(net, prop):
    onnx_path, vnnlib_path = ACAS / "onnx" / f"{net}.onnx", ACAS / "vnnlib" / f"{prop}.vnnlib"
    model, spec = _load(onnx_path, vnnlib_path)
    assert model.batched  # the fixed batch axis was made dynamic
    start = time.monotonic()
    cex = ort_falsify(model, spec, deadline=start + 10, seed=0)
    assert cex is not None
    assert time.monotonic() - start < 2.0
    _independent_check(onnx_path, spec, cex)


def test_ort_stage_finds_nothing_on_unsat_acas():
    model, spec = _load(ACAS / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx", ACAS / "vnnlib" / "prop_3.vnnlib")
    stats = AttackStats()
    assert ort_falsify(model, spec, deadline=time.monotonic() + 5, seed=1, samples=2048, stats=stats) is None
    assert stats.ort_points > 2048  # sampling and the descent really ran


def test_ort_stage_respects_deadline():
    model, spec = _load(ACAS / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx", ACAS / "vnnlib" / "prop_3.vnnlib")
    start = time.monotonic()
    assert ort_falsify(model, spec, deadline=start + 0.05, seed=0, samples=10**6) is None
    assert time.monotonic() - start < 1.0


def test_ort_sampling_stops_early_when_hopeless_and_still_finds_sampled_counterexamples():
    """mnist_fc prop_9 (unsat, 784 inputs): every sample's margin is ~1 with a
    spread of ~1e-3, so sampling stops after the first chunk.  The sat instances
    that sampling finds on large inputs are still found: traffic signs (a
    quantised net, output margins +-1, PGD has no gradient there) and
    dist_shift index1561."""
    mnist = BENCHMARKS / "2022_mnist_fc"
    model, spec = _load(mnist / "onnx" / "mnist-net_256x2.onnx", mnist / "vnnlib" / "prop_9_0.05.vnnlib")
    stats = AttackStats()
    assert ort_falsify(model, spec, deadline=time.monotonic() + 5, seed=0, stats=stats) is None
    assert stats.ort_hopeless_groups == 1
    assert stats.ort_points <= 1 + 256  # the centre and the first chunk, not 4096
    traffic = BENCHMARKS / "2023_traffic_signs_recognition"
    dist = BENCHMARKS / "2023_dist_shift"
    for onnx_path, vnnlib_path in [
            (traffic / "onnx" / "3_30_30_QConv_16_3_QConv_32_2_Dense_43_ep_30.onnx.gz",
             traffic / "vnnlib" / "model_30_idx_7040_eps_10.00000.vnnlib"),
            (dist / "onnx" / "mnist_concat.onnx", dist / "vnnlib" / "index1561_delta0.13.vnnlib")]:
        model, spec = _load(onnx_path, vnnlib_path)
        cex = ort_falsify(model, spec, deadline=time.monotonic() + 5, seed=0)
        assert cex is not None, vnnlib_path.name
        _independent_check(onnx_path, spec, cex)


def test_example_sat_found_and_unsat_not():
    model, sat_spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_sat.vnnlib")
    cex = ort_falsify(model, sat_spec, deadline=time.monotonic() + 5)
    assert cex is not None
    _independent_check(EXAMPLES / "example.onnx", sat_spec, cex)
    _, unsat_spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_unsat.vnnlib")
    assert ort_falsify(model, unsat_spec, deadline=time.monotonic() + 5) is None


def test_validate_rejects_non_counterexamples():
    model, spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_sat.vnnlib")
    prop = spec.properties[0]
    assert validate_point(model, prop, np.zeros(2)) is None  # the centre is safe (see make_example.py)
    cex = ort_falsify(model, spec, deadline=time.monotonic() + 5)
    # a point outside the box is clipped back: validation never reports it as given
    outside = cex.inputs * 1000.0
    again = validate_point(model, prop, outside)
    assert again is None or (np.all(again.inputs >= -1) and np.all(again.inputs <= 1))
    # the same output fails against a clause whose threshold is just below it
    strict = Property(prop.box, [Clause(prop.clauses[0].matrix, np.array([cex.outputs[0] - cex.outputs[1] - 1e-6]))])
    assert validate_point(model, strict, cex.inputs) is None


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6, allow_nan=False), st.floats(0, 1e3, allow_nan=False), st.floats(-2, 3))
def test_snap_into_box_stays_inside_in_float32(low, width, where):
    lower, upper = np.array([low]), np.array([low + width])
    x = lower + where * (upper - lower)
    snapped = snap_into_box(x, lower, upper, np.float32)
    assert snapped.dtype == np.float32
    assert in_box(snapped, lower, upper, np.float32)
    representable = np.float32(lower[0]).astype(np.float64)
    if lower[0] <= representable <= upper[0] or lower[0] <= np.float32(upper[0]) <= upper[0]:
        assert lower[0] <= float(snapped[0]) <= upper[0]


def test_in_box_tolerance_is_tiny():
    lower, upper = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    assert in_box(np.array([1.0 + 1e-10, 1.5]), lower, upper)
    assert not in_box(np.array([1.0 + 1e-6, 1.5]), lower, upper)


def _example_graph():
    """The example network as a hand-built Graph (independent of the importer)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from bounds.graph import Graph, Node
    from bounds.ops.linear import Linear
    from bounds.ops.relu import ReLU

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(EXAMPLES / "example.onnx").graph.initializer}
    nodes, previous = [], "x"
    for i in range(3):
        w, b = torch.tensor(weights[f"W{i}"].T), torch.tensor(weights[f"B{i}"])
        nodes.append(Node(f"z{i}", Linear(w, b), [previous], (1, w.shape[0])))
        previous = f"z{i}"
        if i < 2:
            nodes.append(Node(f"h{i}", ReLU(), [previous], (1, w.shape[0])))
            previous = f"h{i}"
    return Graph("x", (1, 2), nodes, previous)


def test_pgd_finds_example_counterexample_and_never_a_false_one():
    graph = _example_graph()
    model, sat_spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_sat.vnnlib")
    stats = AttackStats()
    cex = pgd_falsify(graph, model, sat_spec, deadline=time.monotonic() + 10, seed=3, restarts=8, steps=50, stats=stats)
    assert cex is not None and stats.pgd_steps >= 1
    _independent_check(EXAMPLES / "example.onnx", sat_spec, cex)
    _, unsat_spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_unsat.vnnlib")
    assert pgd_falsify(graph, model, unsat_spec, deadline=time.monotonic() + 10, restarts=16, steps=50) is None


def test_pgd_reaches_an_off_centre_corner():
    """A box where the violating region is a small corner far from the centre."""
    graph = _example_graph()
    model, spec = _load(EXAMPLES / "example.onnx", EXAMPLES / "example_sat.vnnlib")
    outputs = model.evaluate(np.array([[-1.0, -1.0], [1, 1], [-1, 1], [1, -1]]))
    gaps = outputs[:, 0] - outputs[:, 1]
    threshold = float(np.min(gaps)) + 1e-3  # only points near the best corner violate it
    tight = Spec([Property(spec.properties[0].box, [Clause(np.array([[1.0, -1.0]]), np.array([threshold]))])], 2, 2)
    cex = pgd_falsify(graph, model, tight, deadline=time.monotonic() + 10, seed=0, restarts=16, steps=100)
    assert cex is not None
    assert cex.outputs[0] - cex.outputs[1] <= threshold
