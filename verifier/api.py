"""Python API: :func:`verify` and :func:`bounds`.

Both take the model as an ONNX path, ONNX bytes, an ``onnx.ModelProto`` or a
``torch.nn.Module`` (exported in memory with ``torch.onnx.export``, the
TorchScript exporter, from an example input) and enter the same importer and
pipeline as the command line, so verdicts agree with ``nnverify run``.

    >>> import numpy as np, torch
    >>> from verifier import api
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.eye(2)); _ = net[0].bias.zero_()
    >>> out = api.bounds(net, (np.zeros(2), np.ones(2)), [[1.0, -1.0]])   # y0 - y1 on [0,1]^2
    >>> [round(v, 4) for v in out.lower.tolist()], [round(v, 4) for v in out.upper.tolist()]
    ([-1.0], [1.0])
    >>> r = api.verify(net, api.Spec.box([0, 0], [1, 1]).robust(0), timeout=10)
    >>> r.status, bool(r.counterexample_output[0, 1] >= r.counterexample_output[0, 0])
    ('sat', True)

``verify`` returns a :class:`VerificationResult`: the pipeline's
:class:`~verifier.results.Result` (status, validated counterexample, per-clause
bounds, stats, time) plus the counterexample as tensors shaped like the
model's input and output.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np

from verifier.config import VerifyConfig
from verifier.errors import InputError
from verifier.results import Result
from verifier.spec_builder import SpecBuilder

Spec = SpecBuilder  # ``api.Spec.linf_ball(x, eps).robust(label)``


@dataclass
class VerificationResult(Result):
    """A :class:`Result` with the counterexample as torch tensors.

    ``counterexample_input``/``counterexample_output``: shaped ``input_shape``
    / ``output_shape`` (the model's, batch axis included), ``None`` unless
    ``sat``.  For a ``torch.nn.Module`` the counterexample was also re-run on
    the module itself: ``stats["module_max_abs_diff"]``.
    """

    input_shape: tuple = ()
    output_shape: tuple = ()
    counterexample_input: object = None
    counterexample_output: object = None


@dataclass
class BoundsResult:
    """Certified ``lower <= C y - d <= upper`` for every input of the box (``(rows,)`` each)."""

    lower: object
    upper: object
    method: str
    time: float
    stats: dict = field(default_factory=dict)


@dataclass
class _Model:
    onnx_bytes: bytes
    label: str
    module: object = None


def _load_model(model, example_input=None, num_inputs: int | None = None) -> _Model:
    """ONNX bytes of ``model`` (path, bytes, ModelProto or torch.nn.Module)."""
    import onnx

    if isinstance(model, (bytes, bytearray)):
        return _Model(bytes(model), "<bytes>")
    if isinstance(model, onnx.ModelProto):
        return _Model(model.SerializeToString(), "<ModelProto>")
    if isinstance(model, (str, os.PathLike)):
        from verifier.validate import read_model_bytes

        return _Model(read_model_bytes(model), os.fspath(model))
    import torch

    if isinstance(model, torch.nn.Module):
        if example_input is None:
            if num_inputs is None:
                raise InputError("a torch.nn.Module needs example_input (its input shape)")
            example_input = torch.zeros(1, num_inputs)
        example_input = torch.as_tensor(example_input, dtype=torch.float32)
        buffer = io.BytesIO()
        was_training = model.training
        model.eval()
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example_input,), buffer, dynamo=False,
                                  input_names=["input"], output_names=["output"])
        finally:
            model.train(was_training)
        return _Model(buffer.getvalue(), type(model).__name__, module=model)
    raise InputError(f"unsupported model type {type(model).__name__}: expected an ONNX path, bytes, "
                     "onnx.ModelProto or torch.nn.Module")


def _box_size(spec) -> int | None:
    if isinstance(spec, SpecBuilder):
        return spec.parts[0].boxes[0].num_inputs
    return getattr(spec, "num_inputs", None)


def load_spec(spec, num_outputs: int):
    """A :class:`vnnlib.spec.Spec` from a Spec, a builder, a VNN-LIB path or text (1.0 or 2.0)."""
    from vnnlib.spec import Spec as NormalizedSpec

    if isinstance(spec, NormalizedSpec):
        return spec
    if isinstance(spec, SpecBuilder):
        return spec.build(num_outputs)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "(" not in spec):
        from vnnlib.v2 import parse_any

        if not os.path.isfile(spec):
            raise InputError(f"{os.fspath(spec)}: no such property file")
        return parse_any(spec)
    if isinstance(spec, str):
        from vnnlib import parse_vnnlib_string
        from vnnlib.v2 import is_v2, parse_v2_string

        return parse_v2_string(spec) if is_v2(spec) else parse_vnnlib_string(spec)
    raise InputError(f"unsupported spec type {type(spec).__name__}")


def verify(model, spec, *, example_input=None, timeout: float = 60.0, device: str = "auto", seed: int = 0,
           threads: int | None = None, verbose: bool = False, config: VerifyConfig | None = None,
           **options) -> VerificationResult:
    """Verify ``spec`` on ``model``; see the module docstring.

    ``config`` replaces the defaults of every knob; keyword ``options`` override
    single :class:`VerifyConfig` fields (e.g. ``attack=False``, ``pgd_restarts=8``).
    Bad input raises :class:`verifier.errors.NNVerifyError` or ``VnnlibError``.
    """
    import torch

    from verifier.onnx_import import load_onnx
    from verifier.pipeline import verify_spec
    from verifier.validate import OrtModel

    start = time.monotonic()
    base = config or VerifyConfig(timeout=timeout, device=device, seed=seed, threads=threads, verbose=verbose)
    unknown = set(options) - {f.name for f in fields(VerifyConfig)}
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    config = VerifyConfig(**{**{f.name: getattr(base, f.name) for f in fields(VerifyConfig)}, **options})
    loaded = _load_model(model, example_input, _box_size(spec))
    ort_model = OrtModel.load(loaded.label, loaded.onnx_bytes)
    normalized = load_spec(spec, ort_model.num_outputs)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    graph = load_onnx(loaded.onnx_bytes).to(device=config.torch_device())
    # the pipeline's clock starts now; charge the export/import time to the budget
    config.timeout = max(1e-3, config.timeout - (time.monotonic() - start))
    result = verify_spec(graph, normalized, loaded.onnx_bytes, config)
    out = VerificationResult(**{f.name: getattr(result, f.name) for f in fields(Result)},
                             input_shape=tuple(ort_model.input_shape), output_shape=())
    out.time = time.monotonic() - start
    if result.counterexample is not None:
        cex = result.counterexample
        out.counterexample_input = torch.as_tensor(cex.inputs, dtype=torch.float32).reshape(out.input_shape)
        out.counterexample_output = torch.as_tensor(cex.outputs, dtype=torch.float32).reshape(1, -1)
        if loaded.module is not None:
            with torch.no_grad():
                module_out = loaded.module(out.counterexample_input)
            out.output_shape = tuple(module_out.shape)
            out.counterexample_output = out.counterexample_output.reshape(module_out.shape)
            diff = float((module_out.double().reshape(-1) - torch.as_tensor(cex.outputs)).abs().max())
            out.stats["module_max_abs_diff"] = diff
    return out


def bounds(model, box, C=None, d=None, *, method: str = "crown", example_input=None, device: str = "cpu"):
    """Certified bounds of ``C @ y - d`` over the input box ``(lower, upper)``.

    ``C`` defaults to the identity (bounds of every output), ``d`` to zero;
    ``method`` is ``"ibp"``, ``"crown"`` or ``"alpha-crown"``.  Returns a
    :class:`BoundsResult` with float32 torch tensors on ``device``.
    """
    import torch

    from bounds.engine import BoundConfig, compute_bounds
    from verifier.onnx_import import load_onnx

    start = time.monotonic()
    lower = np.asarray(box[0].detach().cpu() if hasattr(box[0], "detach") else box[0], dtype=np.float64).reshape(-1)
    upper = np.asarray(box[1].detach().cpu() if hasattr(box[1], "detach") else box[1], dtype=np.float64).reshape(-1)
    if lower.shape != upper.shape or np.any(lower > upper):
        raise InputError("box must be (lower, upper) of equal size with lower <= upper")
    loaded = _load_model(model, example_input, lower.size)
    graph = load_onnx(loaded.onnx_bytes).to(device=torch.device(device))
    if graph.input_numel != lower.size:
        raise InputError(f"box has {lower.size} values, model input has {graph.input_numel}")
    n_out = graph.output_numel
    matrix = np.eye(n_out) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))
    if matrix.shape[1] != n_out:
        raise InputError(f"C has {matrix.shape[1]} columns, model has {n_out} outputs")
    offset = np.zeros(matrix.shape[0]) if d is None else np.asarray(d, dtype=np.float64).reshape(-1)
    dtype, dev = torch.float32, torch.device(device)
    shape = (1, *graph.input_shape)
    result = compute_bounds(graph, torch.as_tensor(lower, dtype=dtype, device=dev).reshape(shape),
                            torch.as_tensor(upper, dtype=dtype, device=dev).reshape(shape),
                            torch.as_tensor(matrix, dtype=dtype, device=dev)[None],
                            torch.as_tensor(offset, dtype=dtype, device=dev)[None],
                            config=BoundConfig(method=method), want_upper=True)
    return BoundsResult(lower=result.lower.detach()[0], upper=result.upper.detach()[0], method=method,
                        time=time.monotonic() - start, stats=dict(result.stats))
