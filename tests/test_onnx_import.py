"""ONNX import: every benchmark model matches onnxruntime on its property box;
synthetic models cover opset variants and the error paths."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.ops.registry import supported_ops
from verifier.errors import ModelError, UnsupportedOperatorError
from verifier.onnx_import import check_against_onnxruntime, load_onnx

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
TOLERANCE = 1e-4


def _benchmark_models() -> dict[str, str]:
    """First property file of every distinct model in instances.csv."""
    models: dict[str, str] = {}
    with open(BENCH / "instances.csv") as handle:
        for row in csv.DictReader(handle):
            models.setdefault(row["onnx"], row["vnnlib"])
    return models


MODELS = _benchmark_models()


def _box(vnnlib_path: Path):
    from vnnlib import parse_vnnlib
    spec = parse_vnnlib(vnnlib_path)
    lower = np.min([p.box.lower for p in spec.properties], axis=0)
    upper = np.max([p.box.upper for p in spec.properties], axis=0)
    return torch.from_numpy(lower), torch.from_numpy(upper)


def test_all_benchmark_models_are_listed():
    assert len(MODELS) == 39
    assert sum(m.endswith(".gz") for m in MODELS) == 2


@pytest.mark.parametrize("onnx_rel", sorted(MODELS))
def test_benchmark_model_matches_onnxruntime(onnx_rel):
    torch.set_num_threads(1)
    model_path = BENCH / onnx_rel
    graph = load_onnx(model_path)
    lower, upper = _box(BENCH / MODELS[onnx_rel])
    assert lower.numel() == graph.input_numel
    diff = check_against_onnxruntime(graph, model_path, lower, upper, num_points=64, seed=0)
    assert diff <= TOLERANCE, f"{onnx_rel}: max rel diff {diff}"


def test_normalizations_on_real_models():
    acas = load_onnx(BENCH / "2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    # MatMul+Add fused: 7 Linear layers, no separate bias adds
    assert [n.op.op_type for n in acas.nodes].count("Linear") == 7
    assert all(n.op.bias is not None for n in acas.nodes if n.op.op_type == "Linear")
    assert "Add2" not in acas.op_types()
    assert acas.input_shape == (1, 1, 1, 5) and acas.output_shape == (1, 5)
    cgan = load_onnx(BENCH / "2023_cgan/onnx/cGAN_imgSz32_nCh_1.onnx.gz")
    # of 7 BatchNorms, 4 fold into their ConvTranspose/Gemm (one through a Reshape);
    # 3 follow a ReLU and stay element-wise affine maps
    assert [n.op.op_type for n in cgan.nodes].count("Affine") == 3
    dropout = load_onnx(BENCH / "2023_collins_rul_cnn/onnx/NN_rul_small_window_20.onnx")
    assert dropout.input_shape == (1, 1, 20, 20)  # named batch dim -> 1
    nhwc = load_onnx(BENCH / "2021_marabou-cifar10/nets/cifar10_small.onnx")
    assert nhwc.input_layout == "NHWC"


def test_model_from_bytes_and_proto_gz():
    raw = (BENCH / "2023_cgan/onnx/cGAN_imgSz32_nCh_1.onnx.gz").read_bytes()
    from_bytes = load_onnx(raw)
    from_proto = load_onnx(onnx.load_from_string(gzip.decompress(raw)))
    x = torch.rand(3, *from_bytes.input_shape)
    torch.testing.assert_close(from_bytes.forward(x), from_proto.forward(x))


# ------------------------------------------------------------ synthetic models
def _model(nodes, inputs, output, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, [output],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check(model, shape, scale=1.0):
    graph = load_onnx(model)
    n = int(np.prod(shape))
    lower = -scale * torch.ones(n)
    diff = check_against_onnxruntime(graph, model, lower, -lower, num_points=16)
    assert diff <= 1e-5, diff
    return graph


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_gemm_trans_alpha_beta_and_matrix_bias():
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["y"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Gemm", ["y", "W2", "C2"], ["z"], alpha=-1.5, beta=0.5)]
    model = _model(nodes, [_f("x", ["N", 4])], _f("z", ["N", 2]),
                   [("W", _rand(3, 4)), ("C", _rand(3)), ("W2", _rand(3, 2, seed=1)), ("C2", _rand(1, 2, seed=2))])
    graph = _check(model, (1, 4))
    assert graph.op_types() == ["Linear"]


def test_opset9_slice_and_opset13_squeeze_unsqueeze_split():
    old = _model([helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[100, -1], axes=[1, 2])],
                 [_f("x", [1, 4, 6])], _f("y", [1, 3, 2]), opset=9)
    _check(old, (1, 4, 6))
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
             helper.make_node("Split", ["u", "sp"], ["a", "b"], axis=-1),
             helper.make_node("Squeeze", ["b", "ax"], ["s"]),
             helper.make_node("Sub", ["s", "a2"], ["y"]),
             helper.make_node("Squeeze", ["a", "ax"], ["a2"])]
    new = _model(nodes, [_f("x", [1, 5])], _f("y", [1, 2]),
                 [("ax", np.array([0], np.int64)), ("sp", np.array([2, 3], np.int64))])
    # a2 is (1,2) and s is (1,3): make the shapes agree with a Slice of s
    new.graph.node[3].input[0] = "s2"
    new.graph.node.append(helper.make_node("Slice", ["s", "st", "en", "axs"], ["s2"]))
    for k, v in [("st", [0]), ("en", [2]), ("axs", [1])]:
        new.graph.initializer.append(numpy_helper.from_array(np.array(v, np.int64), k))
    _check(new, (1, 5))  # nodes are out of order on purpose: the importer sorts them


def test_conv_variants_pad_resize_pool_reduce_softmax():
    nodes = [
        helper.make_node("Conv", ["x", "W", "b"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2], group=2),
        helper.make_node("Pad", ["c", "pads"], ["p"], mode="reflect"),
        helper.make_node("Resize", ["p", "roi", "scales"], ["r"], mode="nearest"),
        helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[2, 3], pads=[1, 0, 0, 1], strides=[2, 1]),
        helper.make_node("ConvTranspose", ["a", "Wt"], ["t"], strides=[2, 2], pads=[1, 0, 0, 1],
                         output_padding=[1, 0]),
        helper.make_node("BatchNormalization", ["t", "g", "be", "m", "v"], ["n"]),
        helper.make_node("ReduceMean", ["n"], ["rm"], axes=[3], keepdims=1),
        helper.make_node("Softmax", ["rm"], ["y"], axis=1),
    ]
    inits = [("W", _rand(4, 1, 3, 3)), ("b", _rand(4, seed=1)), ("pads", np.array([0, 0, 1, 2, 0, 0, 1, 0])),
             ("scales", np.array([1, 1, 2, 2], np.float32)), ("roi", np.zeros(0, np.float32)), ("Wt", _rand(4, 3, 3, 2, seed=2)),
             ("g", _rand(3, seed=3)), ("be", _rand(3, seed=4)), ("m", _rand(3, seed=5)),
             ("v", np.abs(_rand(3, seed=6)) + 0.5)]
    model = _model(nodes, [_f("x", [1, 2, 7, 6])], _f("y", None), inits, opset=11)
    graph = _check(model, (1, 2, 7, 6))
    assert "Affine" not in graph.op_types()  # BatchNorm folded into ConvTranspose


def test_unsupported_operator_message():
    model = _model([helper.make_node("Hardmax", ["x"], ["y"], name="the_node")],
                   [_f("x", [1, 3])], _f("y", [1, 3]))
    with pytest.raises(UnsupportedOperatorError) as info:
        load_onnx(model)
    message = str(info.value)
    assert "Hardmax" in message and "the_node" in message and "Conv" in message and "\n" not in message
    assert "Relu" in supported_ops() and "Hardmax" not in supported_ops()


def test_garbage_truncated_and_multi_io_models(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot an onnx model at all" * 10)
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_onnx(garbage)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes((BENCH / "2022_rl_benchmarks/onnx/cartpole.onnx").read_bytes()[:5000])
    with pytest.raises(ModelError, match="cut.onnx"):
        load_onnx(truncated)
    with pytest.raises(ModelError, match="missing.onnx"):
        load_onnx(tmp_path / "missing.onnx")
    two = _model([helper.make_node("Add", ["x", "z"], ["y"])], [_f("x", [1, 3]), _f("z", [1, 3])], _f("y", [1, 3]))
    with pytest.raises(ModelError, match="exactly one input"):
        load_onnx(two)


def test_external_data_must_stay_in_model_folder(tmp_path):
    model = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [_f("x", [1, 3])], _f("y", [1, 2]),
                   [("W", _rand(3, 2))])
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    (tmp_path / "outside.bin").write_bytes(_rand(3, 2).tobytes())
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(model, str(folder / "ext.onnx"))
    with pytest.raises(ModelError, match="inside"):
        load_onnx(folder / "ext.onnx")
    entry.value = "inside.bin"
    (folder / "inside.bin").write_bytes(_rand(3, 2).tobytes())
    onnx.save(model, str(folder / "ext.onnx"))
    graph = load_onnx(folder / "ext.onnx")
    np.testing.assert_allclose(graph.nodes[0].op.weight.numpy(), _rand(3, 2).T)
