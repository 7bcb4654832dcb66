"""ReLU-split BaB: split bookkeeping, the domain store, and verdicts on real
dev instances (mnist_fc, a conv net) against their expected answers."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bab.domains import Domain, DomainStore, stack
from bab.relu_split import relu_split_bab
from bab.splits import Split, apply_to_boxes, branch, build_constraints, pad_betas, unpad_betas
from bab.types import BabConfig
from bounds.engine import BoundConfig, compute_bounds
from tests.nets import seeded_relu_net

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


# ------------------------------------------------------------------ splits
def test_apply_to_boxes_cuts_only_split_neurons():
    lower, upper = -torch.ones(1, 4), torch.ones(1, 4)
    histories = [(Split("z", 1, 0.0, -1),), (Split("z", 1, 0.0, +1), Split("z", 3, 0.25, +1)), ()]
    boxes = apply_to_boxes({"z": (lower, upper), "w": (lower, upper)}, histories)
    lo, up = boxes["z"]
    assert lo.tolist() == [[-1, -1, -1, -1], [-1, 0, -1, 0.25], [-1, -1, -1, -1]]
    assert up.tolist() == [[1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert boxes["w"][0] is lower  # untouched nodes pass through


def test_constraints_encode_direction_and_point():
    histories = [(Split("z", 2, 0.5, -1),), (Split("z", 0, 0.0, +1), Split("z", 2, -0.5, +1))]
    (c,) = build_constraints(histories, {"z": (3,)}, ["z"], torch.zeros(1))
    assert tuple(c.coeffs.shape) == (2, 2, 3)
    value = torch.tensor([[0.0, 0.0, 0.25], [1.0, 0.0, -0.25]])
    g = c.violation(value)
    # domain 0: 0.5 - z2 >= 0 (holds: 0.25); padding slot is inert (0)
    assert torch.allclose(g[0], torch.tensor([0.25, 0.0]))
    # domain 1: z0 >= 0 (1.0) and z2 + 0.5 >= 0 (0.25)
    assert torch.allclose(g[1], torch.tensor([1.0, 0.25]))


def test_betas_round_trip_and_child_slot_starts_at_zero():
    parent = (Split("z", 0, 0.0, +1),)
    below, above = branch("z", 4)
    kids = [parent + (below,), parent + (above,)]
    stored = [{"z": torch.full((2, 1), 0.7)}] * 2
    (padded,) = pad_betas(stored, kids, ["z"], 2, torch.zeros(1))
    assert padded.shape == (2, 2, 2)
    assert torch.all(padded[:, :, 0] == 0.7) and torch.all(padded[:, :, 1] == 0)
    back = unpad_betas([padded], kids, ["z"])
    assert back[1]["z"].shape == (2, 2)


# ------------------------------------------------------------------ store
def _domain(score, depth):
    history = tuple(Split("z", i, 0.0, 1) for i in range(depth))
    return Domain(history, torch.tensor([score]), score, {"z": (torch.zeros(3), torch.ones(3))})


def test_store_pops_worst_first_then_depth_first_over_capacity():
    store = DomainStore(capacity=10)
    for i, s in enumerate([0.3, -0.5, -0.1, 0.0]):
        store.push(_domain(s, i))
    assert [d.score for d in store.pop(2)] == [-0.5, -0.1]
    assert store.worst_score() == 0.0
    for i in range(12):
        store.push(_domain(-1.0, i % 5))
    assert store.depth_first
    assert all(d.depth == 4 for d in store.pop(2))
    batch = stack(store.pop(3))
    assert batch.boxes["z"][0].shape == (3, 3) and batch.row_lower.shape == (3, 1)


# ------------------------------------------------------------------ search
def _float64_validator(graph, matrix, offset):
    def validate(x):
        y = graph.forward(torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)).double()[0].numpy()
        return bool(np.all(matrix @ y - offset <= 0))
    return validate


def test_bab_proves_what_alpha_crown_cannot_and_beats_plain_split_bounds():
    torch.manual_seed(0)
    graph = seeded_relu_net([3, 16, 16, 2], seed=3)
    lower, upper = -0.6 * torch.ones(3), 0.6 * torch.ones(3)
    spec = np.array([[1.0, -1.0]])
    samples = graph.forward(lower + (upper - lower) * torch.rand(5000, 3)).double().numpy() @ spec.T
    offset = np.array([samples.min() - 0.02])
    root = compute_bounds(graph, lower[None], upper[None], torch.tensor(spec, dtype=torch.float32),
                          torch.tensor(offset, dtype=torch.float32), config=BoundConfig(method="alpha-crown"))
    assert root.lower.item() < 0  # the root alone cannot prove it
    outcome = relu_split_bab(graph, lower, upper, spec, offset, [0], BabConfig(use_cuts=False),
                             time.monotonic() + 30, _float64_validator(graph, spec, offset))
    assert outcome.status == "unsat"
    assert outcome.stats["domains_visited"] > 0 and outcome.stats["max_depth"] >= 1
    # sat side: an offset above a sampled value is falsified with a validated point
    offset_sat = np.array([samples.min() + 0.01])
    found = relu_split_bab(graph, lower, upper, spec, offset_sat, [0], BabConfig(use_cuts=False),
                           time.monotonic() + 30, _float64_validator(graph, spec, offset_sat))
    assert found.status == "sat" and _float64_validator(graph, spec, offset_sat)(found.counterexample)
    # without a validator nothing can be claimed sat
    blind = relu_split_bab(graph, lower, upper, spec, offset_sat, [0], BabConfig(use_cuts=False),
                           time.monotonic() + 1, None)
    assert blind.status in ("timeout", "unknown")


def test_deadline_is_honored():
    graph = seeded_relu_net([8, 64, 64, 64, 2], seed=1)
    lower, upper = -torch.ones(8), torch.ones(8)
    spec, offset = np.array([[1.0, -1.0]]), np.array([-100.0])  # far from provable/falsifiable quickly
    start = time.monotonic()
    outcome = relu_split_bab(graph, lower, upper, spec, np.array([0.0]), [0], BabConfig(use_cuts=False),
                             start + 1.5, None)
    assert outcome.status in ("timeout", "unsat", "unknown")
    assert time.monotonic() - start < 1.5 + 1.0
    del offset


def _run_instance(onnx: str, vnnlib: str, cap: float):
    from verifier.onnx_import import load_onnx
    from verifier.validate import OrtModel, read_model_bytes, validate_point
    from vnnlib import parse_vnnlib

    if not (BENCH / onnx).exists():
        pytest.skip("benchmarks not available")
    spec, graph = parse_vnnlib(str(BENCH / vnnlib)), load_onnx(str(BENCH / onnx))
    model = OrtModel.load(str(BENCH / onnx), read_model_bytes(str(BENCH / onnx)))
    deadline = time.monotonic() + cap
    outcomes = []
    for index, prop in enumerate(spec.properties):
        matrix = np.concatenate([c.matrix for c in prop.clauses])
        offset = np.concatenate([c.offset for c in prop.clauses])
        rows = [i for i, c in enumerate(prop.clauses) for _ in range(c.num_rows)]
        outcomes.append(relu_split_bab(graph, prop.box.lower, prop.box.upper, matrix, offset, rows,
                                       BabConfig(use_cuts=False), deadline,
                                       lambda x, p=prop, i=index: validate_point(model, p, x, i) is not None))
    return outcomes


@pytest.mark.parametrize("onnx,vnnlib", [
    ("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_9_0.05.vnnlib"),
    ("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_7_0.05.vnnlib"),
])
def test_mnist_fc_unsat_instances(onnx, vnnlib):
    torch.set_num_threads(1)  # oversubscribed threads on a shared 2-core box cost 100x
    outcomes = _run_instance(onnx, vnnlib, 10.0)
    assert [o.status for o in outcomes] == ["unsat"] * len(outcomes), [o.stats for o in outcomes]


def test_mnist_fc_sat_instance_gives_validated_counterexample():
    torch.set_num_threads(1)
    outcomes = _run_instance("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_0_0.05.vnnlib", 10.0)
    assert outcomes[0].status == "sat" and outcomes[0].counterexample is not None


@pytest.mark.slow
def test_conv_unsat_instance():
    torch.set_num_threads(1)
    outcomes = _run_instance("2023_collins_rul_cnn/onnx/NN_rul_small_window_20.onnx",
                             "2023_collins_rul_cnn/vnnlib/robustness_2perturbations_delta40_epsilon10_w20.vnnlib", 10.0)
    assert all(o.status == "unsat" for o in outcomes), [o.stats for o in outcomes]


# ------------------------------------------------------------------ other nonlinear ops (MaxPool)
def _maxpool_net(seed: int):
    """x (3) -> Linear(8) -> ReLU -> view (1, 2, 4) -> MaxPool 1x2 -> (1, 2, 2) -> Linear(2)."""
    from bounds.graph import Graph, Node
    from bounds.ops.linear import Linear
    from bounds.ops.pooling_max import MaxPool
    from bounds.ops.relu import ReLU
    from bounds.ops.shape_ops import Reshape

    gen = torch.Generator().manual_seed(seed)
    nodes = [Node("fc0", Linear(torch.randn(8, 3, generator=gen), 0.5 * torch.randn(8, generator=gen)), ["x"], (8,)),
             Node("relu0", ReLU(), ["fc0"], (8,)),
             Node("grid", Reshape((1, 2, 4)), ["relu0"], (1, 2, 4)),
             Node("pool", MaxPool((1, 2), (1, 2), (0, 0, 0, 0)), ["grid"], (1, 2, 2)),
             Node("flat", Reshape((4,)), ["pool"], (4,)),
             Node("out", Linear(torch.randn(2, 4, generator=gen), torch.zeros(2)), ["flat"], (2,))]
    return Graph("x", (3,), nodes, "out")


@pytest.mark.slow
def test_maxpool_nets_are_split_on_their_relus_and_agree_with_dense_sampling():
    """ReLU-split BaB bounds MaxPool by its relaxation and splits only ReLUs.
    Truth from a dense grid: an ``unsat`` verdict must leave every grid point
    satisfying the property; a ``sat`` one must be a validated point; and
    both verdicts, with branching, must occur over the seeds.  ``unknown`` is
    allowed: with every ReLU split the MaxPool relaxation may still be loose."""
    torch.set_num_threads(1)
    seen, branched = set(), 0
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 41)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for seed in range(7):
        graph = _maxpool_net(seed)
        values = graph.forward(grid)[:, 0] - graph.forward(grid)[:, 1]
        for threshold in (float(values.min()) - 0.3, float(values.min()) + 0.05):
            spec, offset = np.array([[1.0, -1.0]]), np.array([threshold])   # violation: y0 - y1 <= threshold

            def validator(x, graph=graph, threshold=threshold):
                y = graph.forward(torch.as_tensor(x, dtype=torch.float32).reshape(1, 3))[0]
                return float(y[0] - y[1]) <= threshold

            outcome = relu_split_bab(graph, -np.ones(3), np.ones(3), spec, offset, [0], BabConfig(use_cuts=False),
                                     time.monotonic() + 30.0, validator)
            assert outcome.status in ("sat", "unsat", "unknown"), outcome.stats
            if outcome.status == "unsat":
                assert float(values.min()) > threshold  # no grid point violates
            elif outcome.status == "sat":
                assert validator(outcome.counterexample)
            seen.add(outcome.status)
            branched += outcome.status == "unsat" and outcome.stats["domains_visited"] > 0
    assert {"sat", "unsat"} <= seen and branched >= 2, (seen, branched)


def test_maxpool_conv_net_is_routed_to_relu_split_and_proven():
    """verivital Convnet_maxpool (Conv -> ReLU -> MaxPool -> Linear): the strategy
    picks relu-split and it proves the property (4x the spec's radius too)."""
    from bab.strategy import choose_strategy
    from verifier.onnx_import import load_onnx
    from vnnlib import parse_vnnlib

    onnx, vnnlib = "2021_verivital/Convnet_maxpool.onnx", "2021_verivital/specs/maxpool_specs/prop_2_0.004.vnnlib"
    if not (BENCH / onnx).exists():
        pytest.skip("benchmarks not available")
    torch.set_num_threads(1)
    graph, spec = load_onnx(str(BENCH / onnx)), parse_vnnlib(str(BENCH / vnnlib))
    assert choose_strategy(graph, BabConfig(), spec).name == "relu-split"
    prop = spec.properties[0]
    matrix = np.concatenate([c.matrix for c in prop.clauses])
    offset = np.concatenate([c.offset for c in prop.clauses])
    rows = [i for i, c in enumerate(prop.clauses) for _ in range(c.num_rows)]
    lower, upper = np.asarray(prop.box.lower), np.asarray(prop.box.upper)
    centre, radius = (lower + upper) / 2, (upper - lower) / 2
    wide_lower, wide_upper = np.clip(centre - 4 * radius, 0, 1), np.clip(centre + 4 * radius, 0, 1)
    outcome = relu_split_bab(graph, wide_lower, wide_upper, matrix, offset, rows, BabConfig(use_cuts=False),
                             time.monotonic() + 20.0, None)
    assert outcome.status == "unsat", outcome.stats


@pytest.mark.slow
def test_small_net_hands_the_open_search_to_the_exact_mip():
    """safenlp ruarobot (30 inputs, 128 ReLUs, ~100 unstable): the search is
    still open after a second, the whole-box MIP decides it (the search alone
    needed ~47k domains / 43 s); the reference answer is unsat."""
    torch.set_num_threads(1)
    onnx = "2024_safenlp/onnx/ruarobot/perturbations_0.onnx"
    outcomes = _run_instance(onnx, "2024_safenlp/vnnlib/ruarobot/hyperrectangle_4056.vnnlib", 30.0)
    assert outcomes[0].status == "unsat", outcomes[0].stats
    assert outcomes[0].stats["root_mip"] == "unsat"
