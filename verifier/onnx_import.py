"""ONNX model -> :class:`bounds.graph.Graph`.

Pipeline: read (plain or gzip, external data kept inside the model folder)
-> onnx shape inference (a fallback for shapes) -> walk the nodes in
topological order: nodes whose inputs are all constant are folded with the
ONNX reference evaluator; the others go to the builder registered for their
op type (``bounds.ops.registry``), which bakes constants into operators ->
fusion passes (element-wise affine maps folded into a preceding affine map,
Linear, Conv or ConvTranspose: covers BatchNorm folding and MatMul+Add).

Per-sample shapes are the ONNX static shapes with dynamic/named dims set to 1.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from bounds.graph import Graph, Node
from bounds.ops.base import Operator
from bounds.ops.registry import BuildError, NodeContext, Var, get_builder, supported_ops
from verifier.errors import ModelError, UnsupportedOperatorError
from verifier.onnx_fusion import fuse_affine_chains

ModelLike = str | os.PathLike | bytes | onnx.ModelProto

#: Ops that are only supported when every input is constant (they are folded).
CONSTANT_ONLY_OPS = ("Constant", "ConstantOfShape", "Range", "Where", "Size", "NonZero", "Tile", "Less",
                     "Greater", "Not", "And", "Or", "Min", "Max", "Abs", "Ceil", "Round", "Mod")


# ------------------------------------------------------------------- reading
def read_model(model: ModelLike) -> tuple[onnx.ModelProto, str]:
    """Parse ``model`` (path, bytes or proto, gzip allowed); returns ``(proto, label)``."""
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    if isinstance(model, (bytes, bytearray)):
        return _parse(bytes(model), "<bytes>", None), "<bytes>"
    path = Path(model)
    label = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {label}: {exc.strerror or exc}") from None
    return _parse(data, label, path.resolve().parent), label


def _parse(data: bytes, label: str, folder: Path | None) -> onnx.ModelProto:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ModelError(f"{label}: corrupt gzip data ({exc})") from None
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (not always importable by name)
        raise ModelError(f"{label}: not a valid ONNX model ({type(exc).__name__})") from None
    if not proto.HasField("graph") or not proto.graph.node or not proto.graph.output:
        raise ModelError(f"{label}: not a valid ONNX model (no graph, nodes or outputs)")
    _load_external_data(proto, label, folder)
    return proto


def _load_external_data(proto: onnx.ModelProto, label: str, folder: Path | None) -> None:
    tensors = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if not tensors:
        return
    if folder is None:
        raise ModelError(f"{label}: model uses external data but was not given as a file path")
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if folder not in target.parents or not target.is_file():
            raise ModelError(f"{label}: external data {location!r} of tensor {tensor.name!r} "
                             f"must be an existing file inside {folder}")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(folder))
    except Exception as exc:
        raise ModelError(f"{label}: cannot load external data ({exc})") from None


# ------------------------------------------------------------------- helpers
def _static_shape(value_info: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor_type.shape.dim)


def _to_torch(array: np.ndarray) -> torch.Tensor:
    array = np.asarray(array)
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype == object:
        raise BuildError("string tensors are not supported")
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """ONNX requires topological order, but not every exporter obeys: sort stably."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in ready})
            raise ModelError(f"graph has undefined inputs or a cycle (missing {missing[:5]})")
        pending = rest
    return ordered


class _Builder:
    """Mutable state while turning one ONNX graph into our Graph."""

    def __init__(self, proto: onnx.ModelProto, label: str):
        self.proto = proto
        self.label = label
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.constants: dict[str, torch.Tensor] = {}
        self.variables: dict[str, Var] = {}
        self.nodes: list[Node] = []
        self.used_names: set[str] = set()
        self.inferred: dict[str, tuple[int, ...]] = {}

    def infer_shapes(self) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.proto)
        except Exception:  # shape inference is only a fallback
            return
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            shape = _static_shape(vi)
            if shape is not None:
                self.inferred[vi.name] = shape

    # -------------------------------------------------------------- emitting
    def emit(self, onnx_node: onnx.NodeProto, op: Operator, inputs: list[Var], output_index: int | None) -> Var:
        name = onnx_node.output[output_index] if output_index is not None else ""
        if not name or name in self.used_names:
            base = onnx_node.name or onnx_node.op_type
            k = len(self.nodes)
            name = f"{base}#{k}"
            while name in self.used_names:
                k += 1
                name = f"{base}#{k}"
        self.used_names.add(name)
        shape = self._output_shape(op, inputs, onnx_node, output_index)
        self.nodes.append(Node(name, op, [v.name for v in inputs], shape, onnx_name=onnx_node.name))
        return Var(name, shape)

    def _output_shape(self, op, inputs, onnx_node, output_index) -> tuple[int, ...]:
        """Run the op on zeros (cheap at per-sample size); fall back to ONNX inference."""
        try:
            with torch.no_grad():
                y = op.forward(*(torch.zeros(1, *v.shape) for v in inputs))
            return tuple(y.shape[1:])
        except NotImplementedError:
            if output_index is not None and onnx_node.output[output_index] in self.inferred:
                return self.inferred[onnx_node.output[output_index]]
            raise ModelError(f"{self.label}: cannot determine the output shape of node "
                             f"{onnx_node.name!r} ({onnx_node.op_type})") from None

    # --------------------------------------------------------------- folding
    def fold(self, node: onnx.NodeProto) -> list[torch.Tensor]:
        if node.op_type == "Constant":
            return [_to_torch(_constant_value(node))]
        from onnx.reference import ReferenceEvaluator
        feeds = {i: _to_numpy(self.constants[i]) for i in node.input if i}
        # wrap the node in a model so that the evaluator honours the model's opset
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for i, v in feeds.items()],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        evaluator = ReferenceEvaluator(model)
        return [_to_torch(v) for v in evaluator.run(None, feeds)]

    # ----------------------------------------------------------------- nodes
    def build_node(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            self._unsupported(node, f"domain {node.domain!r}")
        values = []
        for name in node.input:
            if not name:
                values.append(None)
            elif name in self.constants:
                values.append(self.constants[name])
            elif name in self.variables:
                values.append(self.variables[name])
            else:
                raise ModelError(f"{self.label}: node {node.name!r} reads undefined tensor {name!r}")
        if all(not isinstance(v, Var) for v in values):
            try:
                outputs = self.fold(node)
            except Exception as exc:
                raise ModelError(f"{self.label}: cannot fold constant node {node.name!r} "
                                 f"({node.op_type}): {exc}") from None
        else:
            builder = get_builder(node.op_type)
            if builder is None:
                self._unsupported(node)
            ctx = NodeContext(
                op_type=node.op_type, name=node.name,
                attrs={a.name: helper.get_attribute_value(a) for a in node.attribute},
                inputs=values, num_outputs=len(node.output), opset=self.opset,
                emit_fn=lambda op, inputs, index, _n=node: self.emit(_n, op, inputs, index),
                inferred_shapes=[self.inferred.get(o) for o in node.output])
            try:
                outputs = builder(ctx)
            except BuildError as exc:
                self._unsupported(node, str(exc))
            except (ModelError, UnsupportedOperatorError):
                raise
            except Exception as exc:
                raise ModelError(f"{self.label}: cannot import node {node.name!r} ({node.op_type}): "
                                 f"{type(exc).__name__}: {exc}") from None
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for name, value in zip(node.output, outputs):
            if not name:
                continue
            if isinstance(value, Var):
                self.variables[name] = value
            elif isinstance(value, torch.Tensor):
                self.constants[name] = value
            else:
                raise ModelError(f"{self.label}: node {node.name!r} produced no value for {name!r}")

    def _unsupported(self, node: onnx.NodeProto, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        raise UnsupportedOperatorError(
            f"unsupported ONNX operator {node.op_type}{detail} in node {node.name!r} of {self.label}; "
            f"supported: {', '.join(supported_ops())}; "
            f"on constants only: {', '.join(CONSTANT_ONLY_OPS)}")


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    raise BuildError(f"Constant with attribute {attr.name}")


# ------------------------------------------------------------------ public API
def load_onnx(model: ModelLike) -> Graph:
    """Import an ONNX model (path, ``.gz`` path, bytes or ModelProto) as a :class:`Graph`.

    Raises :class:`ModelError` for unreadable/invalid models and
    :class:`UnsupportedOperatorError` for operators we cannot express.
    """
    proto, label = read_model(model)
    graph = proto.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializer_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(f"{label}: expected exactly one input and one output, found "
                         f"{len(inputs)} input(s) {[vi.name for vi in inputs]} and "
                         f"{len(graph.output)} output(s) {[o.name for o in graph.output]}")
    state = _Builder(proto, label)
    state.infer_shapes()
    for tensor in graph.initializer:
        try:
            state.constants[tensor.name] = _to_torch(numpy_helper.to_array(tensor))
        except Exception as exc:
            raise ModelError(f"{label}: cannot read initializer {tensor.name!r}: {exc}") from None
    input_info = inputs[0]
    input_shape = _static_shape(input_info)
    if input_shape is None:
        raise ModelError(f"{label}: input {input_info.name!r} has no static shape")
    state.variables[input_info.name] = Var(input_info.name, input_shape)
    state.used_names.add(input_info.name)

    for node in _topological(list(graph.node), set(state.constants) | {input_info.name}):
        state.build_node(node)

    output_name = graph.output[0].name
    if output_name not in state.variables:
        raise ModelError(f"{label}: output {output_name!r} does not depend on the input")
    out_var = state.variables[output_name]
    if out_var.name == input_info.name:  # identity network: give the output a node
        from bounds.ops.shape_ops import Reshape
        state.nodes.append(Node(output_name + "#out", Reshape(input_shape), [input_info.name], input_shape))
        out_var = Var(output_name + "#out", input_shape)

    nodes = _prune(state.nodes, out_var.name)
    nodes = fuse_affine_chains(nodes, out_var.name)
    layout = "as-is"
    first = [n for n in nodes if input_info.name in n.inputs]
    if len(input_shape) == 4 and len(first) == 1 and getattr(first[0].op, "perm", None) == (0, 3, 1, 2):
        layout = "NHWC"
    return Graph(input_info.name, input_shape, nodes, out_var.name, input_layout=layout)


def _prune(nodes: list[Node], output: str) -> list[Node]:
    """Drop nodes the output does not depend on."""
    needed = {output}
    for n in reversed(nodes):
        if n.name in needed:
            needed.update(n.inputs)
    return [n for n in nodes if n.name in needed]


# ----------------------------------------------------------- ORT validation
def check_against_onnxruntime(graph: Graph, model: ModelLike, lower, upper,
                              num_points: int = 64, seed: int = 0) -> float:
    """Max of ``|graph(x) - ort(x)| / (1 + |ort(x)|)`` over points of the box.

    Points: the lower and upper corners, random corners (a quarter), and
    uniform samples.  ``lower``/``upper`` hold the input in row-major order of
    its ONNX shape (any shape with that many elements).
    """
    import onnxruntime as ort

    proto, _ = read_model(model)
    lower = torch.as_tensor(lower, dtype=torch.float64).reshape(-1)
    upper = torch.as_tensor(upper, dtype=torch.float64).reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    n = max(num_points, 2)
    unit = torch.rand(n, lower.numel(), generator=gen, dtype=torch.float64)
    n_corners = max(n // 4, 2)
    unit[:n_corners] = torch.randint(0, 2, (n_corners, lower.numel()), generator=gen).to(torch.float64)
    unit[0], unit[1] = 0.0, 1.0
    points = lower + unit * (upper - lower)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ort_input = session.get_inputs()[0]
    np_dtype = np.float64 if ort_input.type == "tensor(double)" else np.float32
    expected = []
    for point in points:
        feed = point.numpy().astype(np_dtype).reshape(graph.input_shape)
        out = session.run(None, {ort_input.name: feed})[0]
        expected.append(np.asarray(out, dtype=np.float64).reshape(-1))
    expected = torch.from_numpy(np.stack(expected))

    dtype, device = graph.dtype_device()
    with torch.no_grad():
        got = graph.forward(points.to(device=device, dtype=dtype).reshape(n, *graph.input_shape))
    got = got.reshape(n, -1).to(torch.float64).cpu()
    if got.shape != expected.shape:
        raise ModelError(f"graph output {tuple(got.shape)} != onnxruntime output {tuple(expected.shape)}")
    return float(((got - expected).abs() / (1 + expected.abs())).max())
