"""Bounds on real dev networks enclose sampled outputs (corners and faces of
the box included), and the methods are ordered IBP <= CROWN <= alpha-CROWN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # small ops: thread hand-off costs more than it saves

from bounds.engine import BoundConfig, compute_bounds
from tests.test_engine_crown import sample_box
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"

CASES = {
    "acasxu": ("2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "2022_acasxu/vnnlib/prop_3.vnnlib"),
    "mnist_256x2": ("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_9_0.05.vnnlib"),
    "oval21_base_kw": ("2022_oval21/onnx/cifar_base_kw.onnx",
                       "2022_oval21/vnnlib/cifar_base_kw-img8095-eps0.010457516339869282.vnnlib"),
    "eran_sigmoid": ("2021_eran/nets/ffnnSIGMOID__Point_6x200.onnx",
                     "2021_eran/specs/mnist/mnist_spec_idx_7895_eps_0.01200.vnnlib"),
    # Sin/Cos/Pow/Sigmoid and products of two variables (Mul2)
    "ml4acopf": ("2023_ml4acopf/onnx/14_ieee_ml4acopf.onnx",
                 "2023_ml4acopf/vnnlib/14_ieee_prop12.vnnlib"),
}


def load_case(name: str):
    onnx_path, vnnlib_path = CASES[name]
    graph = load_onnx(BENCH / onnx_path)
    prop = parse_vnnlib(BENCH / vnnlib_path).properties[0]
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.tensor(prop.box.lower, dtype=torch.float32).reshape(shape)
    upper = torch.tensor(prop.box.upper, dtype=torch.float32).reshape(shape)
    spec = torch.tensor(np.concatenate([c.matrix for c in prop.clauses]), dtype=torch.float32).unsqueeze(0)
    offset = torch.tensor(np.concatenate([c.offset for c in prop.clauses]), dtype=torch.float32).unsqueeze(0)
    return graph, lower, upper, spec, offset


def sampled_spec_values(graph, lower, upper, spec, offset, count=2000):
    points = sample_box(lower, upper, count, seed=1)[0]
    # faces: pin one coordinate per point to a bound
    flat = points.reshape(count, -1)
    pick = torch.randint(0, flat.shape[1], (count // 4,), generator=torch.Generator().manual_seed(2))
    rows = torch.arange(count // 4) + count // 4
    low_flat, up_flat = lower.reshape(-1), upper.reshape(-1)
    flat[rows[::2], pick[::2]] = low_flat[pick[::2]]
    flat[rows[1::2], pick[1::2]] = up_flat[pick[1::2]]
    outputs = graph.forward(flat.reshape(points.shape)).reshape(count, -1)
    return outputs @ spec[0].T - offset[0]


@pytest.mark.parametrize("name", list(CASES))
def test_real_network_bounds_enclose_samples(name):
    graph, lower, upper, spec, offset = load_case(name)
    values = sampled_spec_values(graph, lower, upper, spec, offset)
    true_min, true_max = values.min(0).values, values.max(0).values
    slack = 1e-4 * (1 + values.abs().max())
    results = {}
    for method in ("ibp", "crown", "alpha-crown"):
        config = BoundConfig(method=method, alpha_iterations=5, optimize_intermediate=False)
        result = compute_bounds(graph, lower, upper, spec, offset, config=config, want_upper=True)
        assert (result.lower[0] <= true_min + slack).all(), method
        assert (result.upper[0] >= true_max - slack).all(), method
        results[method] = result
    assert (results["crown"].lower >= results["ibp"].lower - 1e-5).all()
    assert (results["alpha-crown"].lower >= results["crown"].lower - 1e-5).all()
    assert (results["alpha-crown"].upper <= results["crown"].upper + 1e-5).all()
    # CROWN is far from vacuous on these nets: within 10x of the sampled range
    assert ((true_min - results["crown"].lower[0]) < 10 * (true_max - true_min + 1)).all()


def test_crown_proves_robust_mnist_rows():
    """mnist 256x4 prop_0 (unsat): CROWN already proves every row."""
    graph = load_onnx(BENCH / "2022_mnist_fc/onnx/mnist-net_256x4.onnx")
    prop = parse_vnnlib(BENCH / "2022_mnist_fc/vnnlib/prop_0_0.03.vnnlib").properties[0]
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.tensor(prop.box.lower, dtype=torch.float32).reshape(shape)
    upper = torch.tensor(prop.box.upper, dtype=torch.float32).reshape(shape)
    spec = torch.tensor(np.concatenate([c.matrix for c in prop.clauses]), dtype=torch.float32)
    offset = torch.tensor(np.concatenate([c.offset for c in prop.clauses]), dtype=torch.float32)
    result = compute_bounds(graph, lower, upper, spec, offset)
    assert (result.lower > 0.9).all()
