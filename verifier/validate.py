"""Counterexample validation on onnxruntime, against the ORIGINAL ONNX model.

A ``sat`` verdict is only reported for a point that passed
:func:`validate_point`:

1. **In the box.**  The candidate is clipped to ``[lower, upper]`` in float64,
   cast to the model's input dtype, and nudged one ulp inwards wherever the
   cast rounded it out of the box.  The point fed to the model must then satisfy
   ``lower - tol <= x <= upper + tol`` with ``tol = 1e-9 * (1 + |bound|)``.
   (Only when an interval contains no value of the input dtype at all — e.g. a
   degenerate ``lower == upper`` that float32 cannot represent — is the nearest
   representable value accepted; it is then within half an ulp of the bound.)
2. **In the unsafe set.**  onnxruntime's outputs ``y`` (float64 from here on)
   satisfy every row of some clause: ``C y <= d + tol`` with
   ``tol = 1e-9 * (1 + |d|)``, i.e. only float64 rounding of the product is
   forgiven, never a real margin.

The written counterexample holds exactly the values that were fed to and
returned by onnxruntime.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

from verifier.errors import InputError, ModelError
from verifier.results import Counterexample

BOX_RTOL = 1e-9
OUTPUT_RTOL = 1e-9

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Bytes of an ONNX file; ``.gz`` files are decompressed."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, expected an ONNX file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if path.endswith(".gz") or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ModelError(f"{path}: cannot read model: {exc}") from exc
    if not data:
        raise ModelError(f"{path}: empty file, expected an ONNX model")
    return data


def _static_numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) and d > 0 else 1  # dynamic/named dims count as 1
    return n


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class OrtModel:
    """The original model on onnxruntime, evaluated on flattened batches.

    ``input_shape`` is the ONNX input shape with dynamic dimensions set to 1;
    ``batched`` says whether whole batches run in one call (the leading axis is
    dynamic, or could be made dynamic), otherwise points run one by one.
    """

    path: str
    session: object
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: type
    num_inputs: int
    num_outputs: int
    batched: bool

    @classmethod
    def load(cls, path: str | os.PathLike, data: bytes | None = None) -> "OrtModel":
        import onnxruntime as ort

        path = os.fspath(path)
        if data is None:
            data = read_model_bytes(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # keep onnxruntime's warnings off the terminal
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: not a loadable ONNX model: {_first_line(exc)}") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"{path}: expected one model input, found {len(inputs)} ({names})")
        model_input = inputs[0]
        if model_input.type not in _ORT_DTYPES:
            raise ModelError(f"{path}: input {model_input.name!r} has type {model_input.type}, expected a float tensor")
        outputs = session.get_outputs()
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in model_input.shape)
        model = cls(
            path=path, session=session, input_name=model_input.name, input_shape=shape,
            input_dtype=_ORT_DTYPES[model_input.type], num_inputs=_static_numel(model_input.shape),
            num_outputs=_static_numel(outputs[0].shape), batched=False,
        )
        lead = model_input.shape[0] if model_input.shape else 1
        if len(model_input.shape) >= 2 and not (isinstance(lead, int) and lead > 0):
            model.batched = model._batch_agrees(session)
        elif len(model_input.shape) >= 2 and lead == 1:
            model._try_dynamic_batch(data, options)
        return model

    # ------------------------------------------------------------- batching
    def _try_dynamic_batch(self, data: bytes, options) -> None:
        """Rewrite the leading axis of input and outputs as dynamic so that
        batches run in one call; kept only when it agrees with the original
        session point by point (a Reshape with a fixed batch breaks it)."""
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load_from_string(data)
            graph_inputs = [i for i in proto.graph.input if i.name == self.input_name]
            for value in graph_inputs + list(proto.graph.output):
                dims = value.type.tensor_type.shape.dim
                if len(dims) == 0:
                    return
                dims[0].dim_param = "nnverify_batch"
            del proto.graph.value_info[:]
            # the probe may fail inside a kernel (a Reshape with a fixed batch):
            # onnxruntime would log that at error level on the terminal
            quiet = ort.SessionOptions()
            quiet.log_severity_level = 4
            quiet.intra_op_num_threads = options.intra_op_num_threads
            quiet.inter_op_num_threads = options.inter_op_num_threads
            session = ort.InferenceSession(proto.SerializeToString(), quiet, providers=["CPUExecutionProvider"])
        except Exception:
            return
        if self._batch_agrees(session):
            self.session = session
            self.batched = True

    def _batch_agrees(self, session) -> bool:
        rng = np.random.default_rng(0)
        points = rng.uniform(-1.0, 1.0, size=(3, self.num_inputs))
        try:
            single = np.concatenate([self._run(self.session, p[None]) for p in points])
            batch = self._run(session, points)
        except Exception:
            return False
        return batch.shape == single.shape and bool(np.allclose(batch, single, rtol=1e-5, atol=1e-6, equal_nan=True))

    def _run(self, session, x: np.ndarray) -> np.ndarray:
        feed = x.reshape((x.shape[0],) + self.input_shape[1:]) if x.shape[0] != 1 else x.reshape(self.input_shape)
        out = session.run(None, {self.input_name: feed.astype(self.input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0], -1)

    # ------------------------------------------------------------- evaluate
    def evaluate(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Outputs ``(N, n_out)`` float64 of flattened inputs ``x: (N, n_in)``."""
        x = np.asarray(x).reshape(-1, self.num_inputs).astype(self.input_dtype, copy=False)
        if not self.batched:
            return np.concatenate([self._run(self.session, p[None]) for p in x]) if len(x) else np.zeros((0, self.num_outputs))
        parts = [self._run(self.session, x[i:i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_outputs))


# ----------------------------------------------------------------- checks
def check_spec_fits(spec, num_inputs: int, num_outputs: int, model_name: str = "model") -> None:
    """Raise :class:`InputError` when the property does not fit the model or
    holds non-finite or empty boxes (names both sizes / the variable)."""
    source = spec.source or "property"
    if spec.num_inputs != num_inputs:
        raise InputError(f"{source}: property declares {spec.num_inputs} inputs (X_0..X_{spec.num_inputs - 1}) "
                         f"but {model_name} has {num_inputs} input values")
    if spec.num_outputs != num_outputs:
        raise InputError(f"{source}: property declares {spec.num_outputs} outputs (Y_0..Y_{spec.num_outputs - 1}) "
                         f"but {model_name} has {num_outputs} output values")
    for p_index, prop in enumerate(spec.properties):
        lower, upper = np.asarray(prop.box.lower, float), np.asarray(prop.box.upper, float)
        if lower.shape != (num_inputs,) or upper.shape != (num_inputs,):
            raise InputError(f"{source}: box {p_index} has {lower.size} bounds, expected {num_inputs}")
        bad = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
        if bad.size:
            i = int(bad[0])
            raise InputError(f"{source}: box {p_index}: X_{i} has a non-finite bound [{lower[i]}, {upper[i]}]")
        empty = np.flatnonzero(lower > upper)
        if empty.size:
            i = int(empty[0])
            raise InputError(f"{source}: box {p_index}: X_{i} has lower bound {lower[i]} > upper bound {upper[i]}")
        for c_index, clause in enumerate(prop.clauses):
            if clause.matrix.shape[1:] != (num_outputs,) or clause.offset.shape != clause.matrix.shape[:1]:
                raise InputError(f"{source}: box {p_index} clause {c_index} has shape {clause.matrix.shape}, "
                                 f"expected (k, {num_outputs})")
            if not (np.all(np.isfinite(clause.matrix)) and np.all(np.isfinite(clause.offset))):
                raise InputError(f"{source}: box {p_index} clause {c_index} has a non-finite coefficient")


def snap_into_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype) -> np.ndarray:
    """Clip ``x`` to the box and cast it to ``dtype`` without leaving the box
    (values that rounded outwards move one ulp inwards when that stays inside)."""
    x = np.clip(np.asarray(x, np.float64), lower, upper)
    cast = x.astype(dtype)
    above = cast.astype(np.float64) > upper
    below = cast.astype(np.float64) < lower
    if above.any():
        inward = np.nextafter(cast[above], dtype(-np.inf))
        ok = inward.astype(np.float64) >= lower[above]
        cast[above] = np.where(ok, inward, cast[above])
    if below.any():
        inward = np.nextafter(cast[below], dtype(np.inf))
        ok = inward.astype(np.float64) <= upper[below]
        cast[below] = np.where(ok, inward, cast[below])
    return cast


def in_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype=np.float64) -> bool:
    """``lower - tol <= x <= upper + tol`` with ``tol = 1e-9 (1 + |bound|)``;
    an interval holding no value of ``dtype`` accepts its nearest value."""
    x = np.asarray(x, np.float64)
    ok = (x >= lower - BOX_RTOL * (1 + np.abs(lower))) & (x <= upper + BOX_RTOL * (1 + np.abs(upper)))
    if ok.all():
        return True
    # intervals without a representable value: the nearest one is within one ulp
    lower_cast = lower.astype(dtype).astype(np.float64)
    upper_cast = upper.astype(dtype).astype(np.float64)
    unrepresentable = ~((lower_cast >= lower) & (lower_cast <= upper)) & ~((upper_cast >= lower) & (upper_cast <= upper))
    spacing = np.spacing(np.maximum(np.abs(lower), np.abs(upper)).astype(dtype)).astype(np.float64)
    near = (x >= lower - spacing) & (x <= upper + spacing)
    return bool(np.all(ok | (near & unrepresentable)))


def clause_margins(outputs: np.ndarray, clause) -> np.ndarray:
    """Violation margin ``max_j (C_j y - d_j)`` per row of ``outputs (N, n_out)``;
    ``<= 0`` means the output lies in the clause's unsafe set."""
    return (outputs @ clause.matrix.T - clause.offset).max(axis=1)


def property_margins(outputs: np.ndarray, prop) -> np.ndarray:
    """Smallest clause margin per point (``<= 0``: some clause is violated)."""
    return np.min([clause_margins(outputs, c) for c in prop.clauses], axis=0)


def satisfied_clause(output: np.ndarray, prop) -> int | None:
    """Index of a clause whose every row holds within ``tol = 1e-9 (1 + |d|)``."""
    for index, clause in enumerate(prop.clauses):
        slack = clause.matrix @ output - clause.offset
        if np.all(slack <= OUTPUT_RTOL * (1 + np.abs(clause.offset))):
            return index
    return None


def validate_point(model: OrtModel, prop, x: np.ndarray, property_index: int = 0) -> Counterexample | None:
    """Re-run a candidate on onnxruntime; a :class:`Counterexample` if it is one."""
    lower = np.asarray(prop.box.lower, np.float64)
    upper = np.asarray(prop.box.upper, np.float64)
    point = snap_into_box(np.asarray(x).reshape(-1), lower, upper, model.input_dtype)
    if not in_box(point, lower, upper, model.input_dtype):
        return None
    output = model.evaluate(point[None])[0]
    if not np.all(np.isfinite(output)):
        return None
    clause_index = satisfied_clause(output, prop)
    if clause_index is None:
        return None
    return Counterexample(inputs=point.astype(np.float64), outputs=output,
                          property_index=property_index, clause_index=clause_index)
