"""ONNX Atan, Softplus, Softsign, Elu, Selu and HardSwish end to end: import,
forward against onnxruntime, IBP/CROWN/alpha-CROWN bounds against sampled
onnxruntime outputs, verdicts of the whole verifier and GenBaB without a
lookup table."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bab.lookup_table import table_key
from bounds.engine import BoundConfig, compute_bounds
from bounds.ops.activations_extra import SELU_ALPHA, SELU_GAMMA, Atan, Elu, HardSwish, Softplus, Softsign
from verifier import api
from verifier.onnx_import import check_against_onnxruntime, load_onnx

torch.set_num_threads(1)

# name: (ONNX op, attributes, opset, expected operator class, its (alpha, scale) for Elu)
CASES = {
    "atan": ("Atan", {}, 13, Atan, None),
    "softplus": ("Softplus", {}, 13, Softplus, None),
    "softsign": ("Softsign", {}, 13, Softsign, None),
    "elu": ("Elu", {}, 13, Elu, (1.0, 1.0)),
    "elu_alpha": ("Elu", {"alpha": 0.4}, 13, Elu, (0.4, 1.0)),
    "selu": ("Selu", {}, 13, Elu, (SELU_ALPHA, SELU_GAMMA)),
    # alpha * gamma = 2 > gamma: the slope drops at the kink (a concave corner)
    "selu_custom": ("Selu", {"alpha": 2.5, "gamma": 0.8}, 13, Elu, (2.5, 0.8)),
    "hardswish": ("HardSwish", {}, 14, HardSwish, None),
}
METHODS = ("ibp", "crown", "alpha-crown")


def make_model(op_type: str, attrs: dict, opset: int, sizes=(6, 5, 3), seed: int = 0,
               weight_scale: float = 1.5) -> onnx.ModelProto:
    """``x [N, n_in] -> MatMul -> Add -> op -> MatMul -> y [N, n_out]`` in float32
    (symbolic batch, so onnxruntime evaluates many points per call)."""
    rng = np.random.default_rng(seed)
    n_in, n_hidden, n_out = sizes
    w1 = (weight_scale * rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in)).astype(np.float32)
    b1 = rng.standard_normal(n_hidden).astype(np.float32)
    w2 = (rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["z"]),
             helper.make_node(op_type, ["z"], ["a"], **attrs), helper.make_node("MatMul", ["a", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_outputs(model: onnx.ModelProto, points: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": points.astype(np.float32)})[0].astype(np.float64)


def box_points(lower: np.ndarray, upper: np.ndarray, count: int, rng) -> np.ndarray:
    """Both extreme corners, random corners (a quarter) and uniform points, in float32."""
    unit = rng.random((count, lower.size))
    unit[: count // 4] = rng.integers(0, 2, (count // 4, lower.size))
    unit[0], unit[1] = 0.0, 1.0
    return (lower + unit * (upper - lower)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_import_and_forward_match_onnxruntime(name):
    op_type, attrs, opset, cls, elu_params = CASES[name]
    model = make_model(op_type, attrs, opset)
    graph = load_onnx(model.SerializeToString())
    ops = [node.op for node in graph.nodes if not node.op.is_linear]
    assert len(ops) == 1 and type(ops[0]) is cls
    assert ops[0].op_type == op_type
    if elu_params is not None:  # attributes are float32 in the model
        assert (ops[0].alpha, ops[0].scale) == pytest.approx(elu_params, rel=1e-7)
    # a box around 0 (kinks of Elu/Selu/HardSwish inside) and a very wide one (tails, no overflow)
    for radius in (3.0, 60.0):
        lower, upper = np.full(6, -radius), np.full(6, radius)
        assert check_against_onnxruntime(graph, model, lower, upper, num_points=256) < 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_bounds_enclose_onnxruntime_samples(name):
    """Three boxes (radius 0.05, 0.5, 2): every method's bounds enclose 2000
    onnxruntime outputs; alpha-CROWN <= CROWN <= IBP in width; on the small box
    CROWN's slack to the sampled range is a fraction of IBP's (measured
    0.04-0.09 across these ops)."""
    op_type, attrs, opset, _, _ = CASES[name]
    model = make_model(op_type, attrs, opset)
    graph = load_onnx(model.SerializeToString())
    rng = np.random.default_rng(1)
    for radius in (0.05, 0.5, 2.0):
        centre = rng.standard_normal(6)
        lower, upper = centre - radius, centre + radius
        y = ort_outputs(model, box_points(lower, upper, 2000, rng))
        y_min, y_max = y.min(0), y.max(0)
        tol = 1e-5 * (1 + np.abs(y).max(0))
        box_lo = torch.tensor(lower, dtype=torch.float32).reshape(1, 1, 6)
        box_hi = torch.tensor(upper, dtype=torch.float32).reshape(1, 1, 6)
        widths, slacks = {}, {}
        for method in METHODS:
            result = compute_bounds(graph, box_lo, box_hi, torch.eye(3), config=BoundConfig(method=method),
                                    want_upper=True)
            lb, ub = result.lower[0].double().numpy(), result.upper[0].double().numpy()
            assert np.isfinite(lb).all() and np.isfinite(ub).all()
            assert (lb <= y_min + tol).all(), (method, radius, lb - y_min)
            assert (ub >= y_max - tol).all(), (method, radius, y_max - ub)
            widths[method] = float((ub - lb).sum())
            slacks[method] = float((y_min - lb).sum() + (ub - y_max).sum())
        assert widths["alpha-crown"] <= widths["crown"] + 1e-4 <= widths["ibp"] + 2e-4
        if radius == 0.05:
            assert slacks["crown"] < 0.15 * slacks["ibp"], slacks


# ------------------------------------------------------------------ verifier
def _robust_case(op_type, attrs, opset):
    model = make_model(op_type, attrs, opset, sizes=(2, 12, 3), seed=3, weight_scale=2.0)
    centre = np.array([0.3, -0.2])
    label = int(np.argmax(ort_outputs(model, centre[None])[0]))
    return model, centre, label


def test_atan_verify_small_eps_unsat_large_eps_sat():
    """2 -> 12 -> 3 Atan net, robustness of its class at (0.3, -0.2): eps 0.02
    is verified (alpha-CROWN margins 0.109 / 0.168 measured), eps 0.3 has a
    counterexample (sampled margin -1.39), checked here with onnxruntime."""
    model, centre, label = _robust_case("Atan", {}, 13)
    small = api.verify(model.SerializeToString(), api.Spec.linf_ball(centre, 0.02).robust(label),
                       timeout=30, threads=1)
    assert small.status == "unsat", small.message
    large = api.verify(model.SerializeToString(), api.Spec.linf_ball(centre, 0.3).robust(label),
                       timeout=30, threads=1)
    assert large.status == "sat", large.message
    x = large.counterexample_input.numpy().reshape(-1)
    assert np.all(x >= centre - 0.3 - 1e-6) and np.all(x <= centre + 0.3 + 1e-6)
    y = ort_outputs(model, x[None])[0]
    assert np.allclose(y, large.counterexample_output.numpy().reshape(-1), atol=1e-5)
    assert max(y[j] for j in range(3) if j != label) >= y[label]


@pytest.mark.parametrize("op_type, attrs, opset, eps, other", [
    ("Atan", {}, 13, 0.3, 0), ("Selu", {}, 13, 0.3, 1), ("HardSwish", {}, 14, 0.8, 1)])
def test_genbab_without_lookup_table_proves_what_alpha_crown_cannot(op_type, attrs, opset, eps, other):
    """One clause ``c y <= d`` with ``d`` between the alpha-CROWN bound and the
    true minimum of ``c y`` (certified by CROWN on a 48x48 input split): the
    root fails, GenBaB (midpoint splits, no table for these ops) proves it."""
    model, centre, label = _robust_case(op_type, attrs, opset)
    others = [j for j in range(3) if j != label]
    c = np.zeros(3)
    c[label], c[others[other]] = 1.0, -1.0
    lower, upper = centre - eps, centre + eps
    graph = load_onnx(model.SerializeToString())
    assert table_key(next(n.op for n in graph.nodes if not n.op.is_linear)) is None
    spec = torch.tensor(c, dtype=torch.float64)[None]
    box_lo = torch.tensor(lower, dtype=torch.float32).reshape(1, 1, 2)
    box_hi = torch.tensor(upper, dtype=torch.float32).reshape(1, 1, 2)
    root = float(compute_bounds(graph, box_lo, box_hi, spec, config=BoundConfig(method="alpha-crown")).lower[0, 0])
    n = 48
    grid_x, grid_y = np.linspace(lower[0], upper[0], n + 1), np.linspace(lower[1], upper[1], n + 1)
    cell_lo = torch.tensor([[a, b] for a in grid_x[:-1] for b in grid_y[:-1]], dtype=torch.float32)
    cell_hi = torch.tensor([[a, b] for a in grid_x[1:] for b in grid_y[1:]], dtype=torch.float32)
    certified_min = float(compute_bounds(graph, cell_lo[:, None], cell_hi[:, None], spec).lower.min())
    sampled_min = float((ort_outputs(model, box_points(lower, upper, 4000, np.random.default_rng(0))) @ c).min())
    assert root < certified_min <= sampled_min
    threshold = (root + 2 * certified_min) / 3
    assert certified_min - threshold > 0.005 and threshold - root > 0.01
    result = api.verify(model.SerializeToString(), api.Spec.box(lower, upper).unsafe_if([c], [threshold]),
                        timeout=30, threads=1, bab_strategy="genbab")
    assert result.status == "unsat", result.message
    assert result.stats["proven_by"] == "bab"
    assert result.stats["bab"]["strategy"] == "genbab"
    assert sum(result.stats["bab"]["split_kinds"].values()) >= 1
