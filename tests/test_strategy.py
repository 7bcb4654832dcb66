"""Zero-config strategy choice on real dev graphs, and solve_spec's loop over
properties (batched roots, skips, first sat wins)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bab.strategy import choose_strategy, free_input_dims, solve_spec
from bab.types import BabConfig
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib
from vnnlib.spec import Clause, InputBox, Property, Spec

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
ACAS_NET = BENCHMARKS / "2022_acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"

torch.set_num_threads(1)


@pytest.mark.parametrize("model, expected", [
    ("2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "input-split"),
    ("2022_rl_benchmarks/onnx/cartpole.onnx", "input-split"),
    ("2022_reach_prob_density/onnx/gcas.onnx", "input-split"),
    ("2024_lsnc/onnx/quadrotor2d_state.onnx", "input-split"),   # Sin/Cos but 6 inputs
    ("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "relu-split"),
    ("2024_safenlp/onnx/ruarobot/perturbations_0.onnx", "relu-split"),   # 30 inputs, ReLU
    ("2021_eran/nets/ffnnSIGMOID__Point_6x200.onnx", "genbab"),  # 784 inputs, Sigmoid
])
def test_choice_on_dev_graphs(model, expected):
    from bab.strategy import _strategy_function

    if expected == "genbab" and _strategy_function("genbab") is None:
        expected = "none"  # GenBaB not importable: no applicable BaB for 784 Sigmoid inputs
    graph = load_onnx(BENCHMARKS / model)
    choice = choose_strategy(graph, BabConfig())
    assert choice.name == expected, choice.reason


def test_free_dimensions_come_from_the_boxes():
    # nn4sys mscn: 154 inputs, of which a property leaves only a few free
    graph = load_onnx(BENCHMARKS / "2022_nn4sys" / "onnx" / "mscn_128d.onnx")
    assert choose_strategy(graph).name != "input-split"
    lower = np.zeros(graph.input_numel)
    upper = lower.copy()
    upper[[3, 50, 100]] = 1.0
    spec = Spec([Property(InputBox(lower, upper), [Clause(np.ones((1, 1)), np.zeros(1))])],
                graph.input_numel, 1)
    assert free_input_dims(graph, spec) == 3
    assert choose_strategy(graph, BabConfig(), spec).name == "input-split"


def test_forced_strategy_and_bad_name():
    graph = load_onnx(ACAS_NET)
    assert choose_strategy(graph, BabConfig(strategy="relu-split")).name == "relu-split"
    with pytest.raises(ValueError, match="unknown BaB strategy"):
        choose_strategy(graph, BabConfig(strategy="magic"))


def _halves(prop: Property) -> list[Property]:
    """Two properties covering ``prop``'s box (split along input 0)."""
    middle = (prop.box.lower + prop.box.upper) / 2
    left_upper, right_lower = prop.box.upper.copy(), prop.box.lower.copy()
    left_upper[0], right_lower[0] = middle[0], middle[0]
    return [Property(InputBox(prop.box.lower, left_upper), prop.clauses),
            Property(InputBox(right_lower, prop.box.upper), prop.clauses)]


def test_solve_spec_batches_roots_and_honours_skip():
    graph = load_onnx(ACAS_NET)
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu" / "vnnlib" / "prop_1.vnnlib")
    split = Spec(_halves(spec.properties[0]), spec.num_inputs, spec.num_outputs)
    outcome = solve_spec(graph, split, BabConfig(), time.monotonic() + 30, None)
    assert outcome.status == "unsat"
    assert outcome.stats["strategy"] == "input-split" and outcome.stats["roots"] == 2
    skipped = solve_spec(graph, split, BabConfig(), time.monotonic() + 30, None, skip=[0])
    assert skipped.status == "unsat" and skipped.stats["roots"] == 1


def test_solve_spec_stops_at_first_sat():
    graph = load_onnx(BENCHMARKS / "2022_acasxu" / "onnx" / "ACASXU_run2a_1_9_batch_2000.onnx")
    spec = parse_vnnlib(BENCHMARKS / "2022_acasxu" / "vnnlib" / "prop_4.vnnlib")
    prop = spec.properties[0]

    def validator(x):
        y = graph.forward(torch.as_tensor(x, dtype=torch.float32).reshape((1,) + tuple(graph.input_shape)))
        y = y.flatten().double().numpy()
        return any(bool(np.all(c.matrix @ y <= c.offset)) for c in prop.clauses)

    outcome = solve_spec(graph, spec, BabConfig(), time.monotonic() + 30, validator)
    assert outcome.status == "sat" and validator(outcome.counterexample)
    assert np.all(outcome.counterexample >= prop.box.lower - 1e-6) and np.all(outcome.counterexample <= prop.box.upper + 1e-6)


def test_no_applicable_strategy_is_unknown():
    graph = load_onnx(BENCHMARKS / "2021_eran" / "nets" / "ffnnSIGMOID__Point_6x200.onnx")
    import bab.strategy as strategy

    original = strategy._strategy_function
    strategy._strategy_function = lambda name: None if name == "genbab" else original(name)
    try:
        lower = np.zeros(graph.input_numel)
        spec = Spec([Property(InputBox(lower, lower + 0.01), [Clause(np.eye(10)[:1], np.zeros(1))])],
                    graph.input_numel, 10)
        outcome = solve_spec(graph, spec, BabConfig(), time.monotonic() + 5, None)
    finally:
        strategy._strategy_function = original
    assert outcome.status == "unknown" and outcome.stats["strategy"] == "none"


def test_operator_without_relaxation_makes_bab_unknown_not_an_error():
    """A net ending in ArgMax (no linear relaxation) and a scalar output: BaB
    must answer unknown instead of raising."""
    from bounds.graph import Graph, Node
    from bounds.ops.discrete import ArgMax
    from bounds.ops.linear import Linear
    from bounds.ops.relu import ReLU

    torch.manual_seed(0)
    nodes = [Node("h", Linear(torch.randn(40, 20), torch.randn(40)), ["x"], (1, 40)),
             Node("r", ReLU(), ["h"], (1, 40)),
             Node("o", Linear(torch.randn(3, 40), torch.zeros(3)), ["r"], (1, 3)),
             Node("a", ArgMax(axis=1, keepdims=False), ["o"], (1,))]
    graph = Graph("x", (1, 20), nodes, "a")
    lower = -np.ones(20)
    spec = Spec([Property(InputBox(lower, -lower), [Clause(np.array([[1.0]]), np.array([-0.5]))])], 20, 1)
    outcome = solve_spec(graph, spec, BabConfig(strategy="relu-split"), time.monotonic() + 10, None)
    assert outcome.status == "unknown" and outcome.stats["strategy"] == "none"
    assert "ArgMax" in outcome.stats["strategy_reason"]
