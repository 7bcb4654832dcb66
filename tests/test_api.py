"""Python API: verify/bounds on a small torch MLP and on dev ONNX instances,
with the same verdicts as the CLI; Spec builder; assert_verified."""
from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier
from verifier import api, spec_builder
from verifier.testing import assert_verified
from vnnlib import format_vnnlib, parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "benchmarks"
ACAS = BENCH / "2022_acasxu"


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3))
    return net.eval()


@pytest.fixture(scope="module")
def point(mlp):
    x = torch.tensor([[0.3, -0.2, 0.5, 0.1]])
    with torch.no_grad():
        label = int(mlp(x).argmax())
    return x, label


def _cli(model_path, prop_path, timeout=30):
    out = subprocess.run([sys.executable, "-m", "verifier", "run", str(model_path), str(prop_path),
                          "--timeout", str(timeout), "--threads", "1"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.split("nnverify: ")[-1].split()[0]


def test_docstring_examples_run():
    for module in (api, spec_builder):
        failures, attempted = doctest.testmod(module)
        assert attempted > 0 and failures == 0


def test_torch_mlp_robust_small_eps_is_verified(mlp, point, tmp_path):
    x, label = point
    spec = api.Spec.linf_ball(x, 0.001).robust(label)
    result = verifier.verify(mlp, spec, example_input=x, timeout=30, threads=1)
    assert result.status == "unsat"
    # the same verdict from the CLI on the exported model and the written property
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(api._load_model(mlp, x).onnx_bytes)
    prop_path = tmp_path / "robust.vnnlib"
    prop_path.write_text(format_vnnlib(spec.build(num_outputs=3)))
    assert _cli(model_path, prop_path) == "unsat"


def test_torch_mlp_large_eps_counterexample_checked_on_module(mlp, point, tmp_path):
    x, label = point
    spec = api.Spec.linf_ball(x, 2.0).robust(label)
    result = api.verify(mlp, spec, example_input=x, timeout=30, threads=1)
    assert result.status == "sat"
    cex_in, cex_out = result.counterexample_input, result.counterexample_output
    assert cex_in.shape == x.shape and cex_out.shape == (1, 3)
    assert torch.all(cex_in >= x - 2.0 - 1e-6) and torch.all(cex_in <= x + 2.0 + 1e-6)
    with torch.no_grad():
        y = mlp(cex_in)[0]
    assert max(y[j] - y[label] for j in range(3) if j != label) >= -1e-5  # label is not the strict winner
    assert result.stats["module_max_abs_diff"] < 1e-4
    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(api._load_model(mlp, x).onnx_bytes)
    prop_path = tmp_path / "robust.vnnlib"
    prop_path.write_text(format_vnnlib(spec.build(num_outputs=3)))
    assert _cli(model_path, prop_path) == "sat"


def test_bounds_enclose_samples(mlp, point):
    x, _ = point
    lower, upper = x - 0.1, x + 0.1
    C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    for method in ("ibp", "crown"):
        out = api.bounds(mlp, (lower, upper), C, method=method, example_input=x)
        samples = lower + (upper - lower) * torch.rand(2000, 4)
        with torch.no_grad():
            values = mlp(samples) @ torch.as_tensor(C, dtype=torch.float32).T
        assert torch.all(values.min(0).values >= out.lower - 1e-5)
        assert torch.all(values.max(0).values <= out.upper + 1e-5)
    crown = api.bounds(mlp, (lower, upper), C, method="crown", example_input=x)
    ibp = api.bounds(mlp, (lower, upper), C, method="ibp", example_input=x)
    assert torch.all(crown.lower >= ibp.lower - 1e-6)


@pytest.mark.parametrize("onnx_name, prop, expected", [
    ("ACASXU_run2a_1_9_batch_2000.onnx", "prop_4.vnnlib", "sat"),
    pytest.param("ACASXU_run2a_1_1_batch_2000.onnx", "prop_3.vnnlib", "unsat", marks=pytest.mark.slow),
])
def test_dev_instance_same_verdict_as_cli(onnx_name, prop, expected):
    model_path, prop_path = ACAS / "onnx" / onnx_name, ACAS / "vnnlib" / prop
    # path inputs, bytes + parsed Spec, and VNN-LIB text all agree
    by_path = api.verify(model_path, prop_path, timeout=60, threads=1)
    by_bytes = api.verify(model_path.read_bytes(), parse_vnnlib(prop_path), timeout=60, threads=1)
    assert by_path.status == by_bytes.status == expected
    assert _cli(model_path, prop_path, timeout=60) == expected
    if expected == "sat":
        assert by_path.counterexample_input.shape == (1, 1, 1, 5)


def test_assert_verified(mlp, point):
    x, label = point
    assert assert_verified(mlp, api.Spec.linf_ball(x, 0.001).robust(label), example_input=x,
                           timeout=30, threads=1).status == "unsat"
    with pytest.raises(AssertionError, match="property violated"):
        assert_verified(mlp, api.Spec.linf_ball(x, 2.0).robust(label), example_input=x, timeout=30, threads=1)


def test_builder_combines_and_validates():
    a = api.Spec.box([0, 0], [1, 1]).unsafe_if([[1.0, 0.0]], [-3.0]).safe_if([0.0, 1.0], 5.0)
    b = api.Spec.boxes([([2, 2], [3, 3]), ([4, 4], [5, 5])]).robust(1)
    spec = (a | b).build(num_outputs=2)
    assert len(spec.properties) == 3 and [len(p.clauses) for p in spec.properties] == [2, 1, 1]
    np.testing.assert_array_equal(spec.properties[0].clauses[1].matrix, [[0.0, -1.0]])
    np.testing.assert_array_equal(spec.properties[0].clauses[1].offset, [-5.0])
    with pytest.raises(ValueError, match="empty box"):
        api.Spec.box([1.0], [0.0])
    with pytest.raises(ValueError, match="no output clause"):
        api.Spec.box([0.0], [1.0]).build(num_outputs=2)
    with pytest.raises(ValueError, match="out of range"):
        api.Spec.box([0.0], [1.0]).robust(5).build(num_outputs=2)
