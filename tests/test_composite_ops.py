"""ONNX ops built from existing operators (bounds/ops/builders_composite.py):
forward equal to onnxruntime, every bound method encloses sampled outputs,
and the piecewise-linear ones stay in the ReLU world (ReLU BaB, MIP)."""
from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine import BoundConfig, compute_bounds
from verifier.errors import UnsupportedOperatorError
from verifier.onnx_import import check_against_onnxruntime, load_onnx

torch.set_num_threads(1)
RNG = np.random.default_rng(7)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _mlp_around(body, body_inits, width_in=6, hidden=8, mid_shape=None, out_width=None, opset=13, seed=0):
    """x [1, width_in] -> Gemm -> Reshape(mid_shape) -> body -> Flatten -> Gemm -> y [1, 3].

    ``body(inp, out)`` returns the ONNX nodes from tensor ``inp`` to ``out``."""
    mid_shape = mid_shape or [1, hidden]
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(width_in, hidden)).astype(np.float32)
    b1 = rng.normal(size=hidden).astype(np.float32) * 0.3
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Reshape", ["h1", "shape"], ["h"])]
    nodes += body("h", "z")
    nodes.append(helper.make_node("Flatten", ["z"], ["zf"]))
    out_width = out_width or int(np.prod(mid_shape))
    w2 = rng.normal(size=(out_width, 3)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", ["zf", "w2"], ["y"]))
    inits = [_const("w1", w1), _const("b1", b1), _const("w2", w2),
             _const("shape", np.asarray(mid_shape, np.int64))] + [_const(k, v) for k, v in body_inits.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _node(op, inputs, **attrs):
    return lambda inp, out: [helper.make_node(op, [inp if i == "@" else i for i in inputs], [out], **attrs)]


CHANNEL = RNG.normal(size=(2, 1, 1)).astype(np.float32)
ROW = RNG.normal(size=(1, 8)).astype(np.float32)
MASK = RNG.random(size=(1, 8)) < 0.5
CASES = {
    "max_const": (_node("Max", ["@", "c"]), {"c": ROW}, {}),
    "min_const": (_node("Min", ["@", "c", "c2"]), {"c": ROW, "c2": np.float32(0.4)}, {}),
    "max_vars": (lambda i, o: [helper.make_node("Neg", [i], ["n"]), helper.make_node("Max", [i, "n", "c"], [o])],
                 {"c": ROW}, {}),
    "min_vars": (lambda i, o: [helper.make_node("Mul", [i, "k"], ["n"]), helper.make_node("Min", ["n", i], [o])],
                 {"k": np.float32(-0.7)}, {}),
    "abs": (_node("Abs", ["@"]), {}, {}),
    "prelu_channel": (_node("PRelu", ["@", "s"]), {"s": CHANNEL}, {"mid_shape": [1, 2, 2, 2]}),
    "prelu_steep": (_node("PRelu", ["@", "s"]), {"s": np.float32(1.7)}, {}),
    "hard_sigmoid": (_node("HardSigmoid", ["@"], alpha=0.3, beta=0.4), {}, {}),
    "clip_both": (_node("Clip", ["@", "lo", "hi"]), {"lo": np.float32(-0.3), "hi": np.float32(0.6)}, {}),
    "clip_low": (_node("Clip", ["@", "lo"]), {"lo": np.float32(0.2)}, {}),
    "clip_high_opset10": (_node("Clip", ["@"], max=0.4), {}, {"opset": 10}),
    "clip_crossed": (_node("Clip", ["@", "lo", "hi"]), {"lo": np.float32(0.5), "hi": np.float32(-0.5)}, {}),
    "leaky": (_node("LeakyRelu", ["@"], alpha=0.1), {}, {}),
    "leaky_steep": (_node("LeakyRelu", ["@"], alpha=2.5), {}, {}),
    "ceil": (_node("Ceil", ["@"]), {}, {}),
    "sum": (_node("Sum", ["@", "@", "c"]), {"c": ROW}, {}),
    "mean": (_node("Mean", ["@", "c"]), {"c": ROW}, {}),
    "where_const": (_node("Where", ["m", "@", "c"]), {"m": MASK, "c": ROW}, {}),
    "where_const_first": (_node("Where", ["m", "c", "@"]), {"m": MASK, "c": ROW}, {}),
    "where_vars": (lambda i, o: [helper.make_node("Neg", [i], ["n"]), helper.make_node("Where", ["m", i, "n"], [o])],
                   {"m": MASK}, {}),
    "tile": (_node("Tile", ["@", "r"]), {"r": np.asarray([1, 2, 1, 3], np.int64)},
             {"mid_shape": [1, 2, 2, 2], "out_width": 48}),
    "global_avg": (_node("GlobalAveragePool", ["@"]), {}, {"mid_shape": [1, 2, 2, 2], "out_width": 2}),
    "global_max": (_node("GlobalMaxPool", ["@"]), {}, {"mid_shape": [1, 2, 2, 2], "out_width": 2}),
    "reduce_max": (_node("ReduceMax", ["@"], axes=[2, 3], keepdims=0), {}, {"mid_shape": [1, 2, 2, 2],
                                                                          "out_width": 2}),
    "reduce_min_odd": (_node("ReduceMin", ["@"], axes=[1], keepdims=1), {}, {"mid_shape": [1, 8, 1],
                                                                           "out_width": 1}),
    "reduce_max_all": (_node("ReduceMax", ["@"], keepdims=1), {}, {"mid_shape": [1, 8], "out_width": 1}),
    "instance_norm": (_node("InstanceNormalization", ["@", "g", "b"], epsilon=1e-3),
                      {"g": RNG.normal(size=2).astype(np.float32), "b": RNG.normal(size=2).astype(np.float32)},
                      {"mid_shape": [1, 2, 2, 2]}),
    "gelu_tanh": (_node("Gelu", ["@"], approximate="tanh"), {}, {"opset": 20}),
    "layer_norm": (_node("LayerNormalization", ["@", "g", "b"], axis=-1, epsilon=1e-3),
                   {"g": RNG.normal(size=8).astype(np.float32), "b": RNG.normal(size=8).astype(np.float32)},
                   {"opset": 17}),
}


def _build(name):
    body, inits, kwargs = CASES[name]
    return _mlp_around(body, inits, seed=zlib.crc32(name.encode()), **kwargs)


def _ort_outputs(model, points: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, {"x": p.reshape(1, -1).astype(np.float32)})[0].reshape(-1)
                     for p in points]).astype(np.float64)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_onnxruntime(name):
    model = _build(name)
    graph = load_onnx(model)
    lower, upper = -np.ones(6) * 2, np.ones(6) * 2
    assert check_against_onnxruntime(graph, model, lower, upper, num_points=64) < 2e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_bound_method_encloses_sampled_outputs(name):
    model = _build(name)
    graph = load_onnx(model)
    rng = np.random.default_rng(1)
    for box in range(3):
        centre = rng.normal(size=6) * 0.5
        radius = [0.05, 0.4, 1.5][box]
        lower, upper = centre - radius, centre + radius
        unit = rng.random((1500, 6))
        unit[:64] = rng.integers(0, 2, (64, 6))   # corners
        outputs = _ort_outputs(model, lower + unit * (upper - lower))
        lo_t = torch.tensor(lower, dtype=torch.float32).reshape(1, *graph.input_shape)
        up_t = torch.tensor(upper, dtype=torch.float32).reshape(1, *graph.input_shape)
        spec = torch.eye(3).unsqueeze(0)
        for method in ("ibp", "crown", "alpha-crown"):
            result = compute_bounds(graph, lo_t, up_t, spec, config=BoundConfig(method=method, alpha_iterations=10),
                                    want_upper=True)
            low, high = result.lower[0].double().numpy(), result.upper[0].double().numpy()
            slack = 1e-4 * (1 + np.abs(outputs).max())
            assert (low <= outputs.min(0) + slack).all(), (name, method, radius, low, outputs.min(0))
            assert (high >= outputs.max(0) - slack).all(), (name, method, radius, high, outputs.max(0))


def test_piecewise_linear_ops_become_relus_and_abs_gets_its_hull():
    """Max/Min/Abs/PRelu/LeakyRelu/Clip/ReduceMax import as ReLU nodes plus linear ops (so the
    MIP encoding and ReLU-split BaB apply), and CROWN's bound of |x| on a box
    that crosses 0 approaches the hull's: the chord above, the minimum 0 below."""
    from bounds.lp_encode import encode_graph
    for name in ("max_vars", "min_const", "abs", "prelu_channel", "reduce_max", "global_max", "clip_both",
                 "clip_low", "leaky", "hard_sigmoid"):
        graph = load_onnx(_build(name))
        kinds = {n.op.op_type for n in graph.nodes if not n.op.is_linear}
        assert kinds <= {"Relu", "MaxPool"}, (name, kinds)
        if "MaxPool" not in kinds:
            encode_graph(graph)   # raises on anything but linear ops and ReLU
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    model = helper.make_model(helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "abs", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    graph = load_onnx(model)
    result = compute_bounds(graph, torch.tensor([[[-1.0]]]), torch.tensor([[[3.0]]]), torch.eye(1).unsqueeze(0),
                            config=BoundConfig(method="alpha-crown", alpha_iterations=30), want_upper=True)
    assert -0.02 <= float(result.lower) <= 1e-6   # alpha = 1/2 gives the hull's 0; Adam gets close
    assert float(result.upper) == pytest.approx(3.0, abs=1e-5)


def test_max_net_verdicts_match_the_exact_mip():
    """A net with a Max of two variables and a constant: the verifier's verdict
    (root bound, BaB near the boundary, attack) agrees with the exact MIP optimum
    of the same property at every eps."""
    from bounds.lp import mip_minimum
    from verifier.api import verify
    from verifier.spec_builder import SpecBuilder

    model = _build("max_vars")
    graph = load_onnx(model)
    centre = np.full(6, 0.3, np.float32)
    label = int(_ort_outputs(model, centre[None])[0].argmax())
    statuses = []
    for eps in (0.05, 0.21, 0.215, 1.0):   # 0.21: MIP margin +0.035, BaB (29 domains); 0.215: -0.063
        spec = SpecBuilder.linf_ball(centre, eps).robust(label, 3)
        result = verify(model.SerializeToString(), spec, timeout=30, example_input=torch.zeros(1, 6))
        lower = torch.tensor(centre - eps, dtype=torch.float64)
        upper = torch.tensor(centre + eps, dtype=torch.float64)
        worst = min(mip_minimum(graph, lower, upper, _margin_row(label, j)) for j in range(3) if j != label)
        assert result.status == ("unsat" if worst > 0 else "sat"), (eps, result.status, worst)
        statuses.append(result.status)
    assert statuses == ["unsat", "unsat", "sat", "sat"]


def _margin_row(label: int, other: int) -> np.ndarray:
    row = np.zeros(3)
    row[label], row[other] = 1.0, -1.0
    return row


def test_unsupported_variants_name_the_node():
    body = _node("Tile", ["@", "r"])
    with pytest.raises(UnsupportedOperatorError, match="Tile along the batch axis"):
        load_onnx(_mlp_around(body, {"r": np.asarray([2, 1], np.int64)}, out_width=16))


def _clip_mlp(seed: int, n_in: int = 20, hidden: int = 24) -> onnx.ModelProto:
    """n_in -> hidden -> Clip(0, 1) -> hidden -> Clip(0, 1) -> 3 (ReLU6-style)."""
    rng = np.random.default_rng(seed)
    sizes, nodes, inits, prev = [n_in, hidden, hidden, 3], [], [], "x"
    for i in range(3):
        w = (rng.normal(size=(sizes[i], sizes[i + 1])) * 1.5 / np.sqrt(sizes[i])).astype(np.float32)
        b = (rng.normal(size=sizes[i + 1]) * 0.3).astype(np.float32)
        inits += [_const(f"w{i}", w), _const(f"b{i}", b)]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if i == 2 else f"a{i}"])]
        if i < 2:
            nodes.append(helper.make_node("Clip", [f"a{i}", "zero", "one"], [f"c{i}"]))
            prev = f"c{i}"
    inits += [_const("zero", np.float32(0)), _const("one", np.float32(1))]
    graph = helper.make_graph(nodes, "clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_clip_net_goes_to_relu_split_bab_and_agrees_with_the_mip():
    """20 free inputs: a Clip net is piecewise linear, so ReLU-split BaB (not
    GenBaB) decides it; verdicts match the exact MIP."""
    from bounds.lp import mip_minimum
    from verifier.api import verify
    from verifier.spec_builder import SpecBuilder

    model = _clip_mlp(3)
    graph = load_onnx(model)
    centre = np.zeros(20, np.float32)
    label = int(_ort_outputs(model, centre[None])[0].argmax())
    for eps, expected in ((0.05, "unsat"), (0.1, "sat")):
        result = verify(model.SerializeToString(), SpecBuilder.linf_ball(centre, eps).robust(label, 3), timeout=30,
                        example_input=torch.zeros(1, 20))
        lower = torch.tensor(centre - eps, dtype=torch.float64)
        upper = torch.tensor(centre + eps, dtype=torch.float64)
        worst = min(mip_minimum(graph, lower, upper, _margin_row(label, j)) for j in range(3) if j != label)
        assert (worst > 0) == (expected == "unsat") and result.status == expected, (eps, result.status, worst)
        if expected == "unsat":
            assert result.stats["bab"]["strategy"] == "relu-split" and result.stats["bab"]["domains_visited"] > 0
