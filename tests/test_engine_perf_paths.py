"""Fast paths of the CROWN engine on the odd dev graphs: point boxes folded
(nn4sys mscn), backward rows skipped behind step functions (traffic_signs),
and the deadline cap (carvana unet).  Every bound is checked against the
network's values on points sampled from the box."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bounds.engine import BoundConfig, compute_bounds
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _instance(model, prop, count):
    graph = load_onnx(str(BENCH / model))
    props = parse_vnnlib(str(BENCH / prop)).properties[:count]
    shape = (-1,) + tuple(graph.input_shape)
    lower = torch.as_tensor(np.stack([p.box.lower for p in props]), dtype=torch.float32).reshape(shape)
    upper = torch.as_tensor(np.stack([p.box.upper for p in props]), dtype=torch.float32).reshape(shape)
    matrix = torch.as_tensor(np.stack([np.concatenate([c.matrix for c in p.clauses]) for p in props]),
                             dtype=torch.float32)
    offset = torch.as_tensor(np.stack([np.concatenate([c.offset for c in p.clauses]) for p in props]),
                             dtype=torch.float32)
    return graph, lower, upper, matrix, offset


def _assert_sound(graph, lower, upper, matrix, offset, bound, samples=64):
    gen = torch.Generator().manual_seed(0)
    for _ in range(samples):
        t = torch.rand(lower.shape, generator=gen)
        t = torch.where(torch.rand(lower.shape, generator=gen) < 0.2, t.round(), t)  # corners and faces
        x = lower + t * (upper - lower)
        y = graph.forward(x).flatten(1)
        value = torch.einsum("bso,bo->bs", matrix, y) - offset
        assert (value >= bound - 1e-4 * (1 + value.abs())).all()


def test_nn4sys_point_nodes_folded_and_sound():
    graph, lower, upper, matrix, offset = _instance(
        "2022_nn4sys/onnx/mscn_128d.onnx", "2022_nn4sys/vnnlib/cardinality_0_800_128.vnnlib.gz", 6)
    crown = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="crown"))
    ibp = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="ibp"))
    # branches fed only by zero-width inputs are constants: no backward rows for them
    rows = crown.stats["unstable_rows"]
    assert rows["62"] == 0 and rows["86"] == 0 and rows["63"] == 0
    assert (crown.lower >= ibp.lower - 1e-6).all()
    assert (crown.lower > ibp.lower + 1e-3).any()
    _assert_sound(graph, lower, upper, matrix, offset, crown.lower)
    alpha = compute_bounds(graph, lower, upper, matrix, offset,
                           config=BoundConfig(method="alpha-crown", alpha_iterations=3))
    assert (alpha.lower >= crown.lower - 1e-6).all()
    _assert_sound(graph, lower, upper, matrix, offset, alpha.lower)


def test_traffic_signs_step_nodes_skip_useless_rows():
    graph, lower, upper, matrix, offset = _instance(
        "2023_traffic_signs_recognition/onnx/3_30_30_QConv_16_3_QConv_32_2_Dense_43_ep_30.onnx.gz",
        "2023_traffic_signs_recognition/vnnlib/model_30_idx_11985_eps_5.00000.vnnlib", 1)
    started = time.perf_counter()
    crown = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="crown"))
    assert time.perf_counter() - started < 20  # was ~80 s with a row per unstable Sign input
    assert crown.stats["step_probes"] >= 1
    assert max(crown.stats["unstable_rows"].values()) <= 64
    ibp = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="ibp"))
    assert (crown.lower >= ibp.lower - 1e-6).all()
    _assert_sound(graph, lower, upper, matrix, offset, crown.lower, samples=16)


def test_deadline_caps_crown_with_valid_bounds():
    graph, lower, upper, matrix, offset = _instance(
        "2022_carvana_unet_2022/onnx/unet_simp_small.onnx",
        "2022_carvana_unet_2022/vnnlib/spec_unet_simp_small_idx_917f262f1608_16_eps_0.00400.vnnlib", 1)
    started = time.perf_counter()
    crown = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="crown"),
                           deadline=time.monotonic() - 1)
    assert time.perf_counter() - started < 10  # uncapped: > 500 s
    assert crown.stats["rows_skipped"] > 0
    ibp = compute_bounds(graph, lower, upper, matrix, offset, config=BoundConfig(method="ibp"))
    # past the deadline nothing is tightened: exactly the (valid) IBP bound
    assert torch.allclose(crown.lower, ibp.lower)
