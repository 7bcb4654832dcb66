"""Verification results and their writers.

Statuses follow VNN-COMP: ``sat`` (a counterexample exists: the property is
violated), ``unsat`` (verified), ``unknown`` (gave up before the deadline),
``timeout`` (ran out of time) and ``error`` (bad input or internal failure).

Exit codes, for CI gates: 0 verified (``unsat``), 1 falsified (``sat``),
2 ``unknown``/``timeout``, 3 ``error``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Status = Literal["sat", "unsat", "unknown", "timeout", "error"]
STATUSES: tuple[str, ...] = ("sat", "unsat", "unknown", "timeout", "error")

_EXIT_CODES = {"unsat": 0, "sat": 1, "unknown": 2, "timeout": 2, "error": 3}


def exit_code(status: str) -> int:
    """Process exit code of a status: 0 unsat, 1 sat, 2 unknown/timeout, 3 error."""
    return _EXIT_CODES.get(status, 3)


@dataclass
class Counterexample:
    """An input of the box and the model's output on it (flattened, float64).

    ``inputs`` are exactly the values fed to onnxruntime during validation
    (float32 values held in float64), ``outputs`` what onnxruntime returned.
    """

    inputs: np.ndarray   # (n_in,)
    outputs: np.ndarray  # (n_out,)
    property_index: int = 0
    clause_index: int = 0

    def to_dict(self) -> dict:
        return {
            "inputs": [float(v) for v in self.inputs],
            "outputs": [float(v) for v in self.outputs],
            "property_index": self.property_index,
            "clause_index": self.clause_index,
        }


@dataclass
class Result:
    """Outcome of one verification call.

    ``clause_bounds``: optional per-clause lower bounds of the violation margin
    ``min over inputs of max_j (C_j y - d_j)`` (a clause is proven when > 0).
    """

    status: Status
    counterexample: Counterexample | None = None
    time: float = 0.0
    message: str = ""
    stats: dict = field(default_factory=dict)
    clause_bounds: list | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.status == "sat" and self.counterexample is None:
            raise ValueError("a sat result needs a counterexample")

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)

    def summary(self) -> str:
        """One line for the terminal: verdict, time and the message, if any."""
        text = f"{self.status} in {self.time:.2f}s"
        if self.message:
            text += f" ({self.message})"
        return text

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "time": self.time,
            "message": self.message,
            "counterexample": None if self.counterexample is None else self.counterexample.to_dict(),
            "clause_bounds": None if self.clause_bounds is None else [_json_float(v) for v in self.clause_bounds],
            "stats": _jsonable(self.stats),
        }


def _json_float(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _jsonable(value):
    """Stats may hold numpy scalars/arrays or infinities; make them JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return _json_float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def format_vnncomp(result: Result) -> str:
    """The VNN-COMP result file text.

    ``sat`` is followed by the counterexample as one s-expression::

        sat
        ((X_0 0.5)
         (X_1 -0.25)
         (Y_0 1.5))

    Values are written with Python's shortest round-trip ``repr`` so that the
    exact float32 values that were validated are reproduced.
    """
    if result.status != "sat":
        return result.status + "\n"
    cex = result.counterexample
    assert cex is not None
    items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(cex.inputs)]
    items += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(cex.outputs)]
    return "sat\n(" + "\n ".join(items) + ")\n"


def parse_vnncomp(text: str) -> tuple[str, dict[str, float]]:
    """Read a VNN-COMP result file: ``(status, {"X_0": v, ..., "Y_0": v})``.

    Also accepts the competition's legacy spellings ``holds``/``violated``.
    """
    lines = text.strip().splitlines()
    if not lines:
        return "error", {}
    status = lines[0].strip().lower()
    status = {"holds": "unsat", "violated": "sat"}.get(status, status)
    values: dict[str, float] = {}
    body = " ".join(lines[1:]).replace("(", " ").replace(")", " ").split()
    for name, value in zip(body[0::2], body[1::2]):
        values[name] = float(value)
    return status, values


def write_vnncomp(result: Result, path: str | os.PathLike) -> None:
    """Write the VNN-COMP result file (atomically: a reader never sees half a file)."""
    _write_atomic(path, format_vnncomp(result))


def write_json(result: Result, path: str | os.PathLike) -> None:
    """Write the result as JSON (status, time, message, counterexample, clause_bounds, stats)."""
    _write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        # a device or pipe (e.g. /dev/stdout): write in place, never rename over it
        with open(path, "w") as handle:
            handle.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
