"""CI safety gate: ``nnverify gate SUITE.toml`` (or ``.yaml``).

A suite names models and properties; every property is verified with the
Python API (same pipeline as ``nnverify run``), a summary table is printed,
JUnit XML and JSON reports are written on request, and the exit code says
whether the gate passes:

* 0: every property verified (or undecided with ``undecided = "pass"``);
* 1: some property is violated (``sat``, a validated counterexample);
* 2: some property is undecided (``unknown``/``timeout``) and ``undecided = "fail"``;
* 3: an error (bad suite, model or property).

Suite format (paths relative to the suite file; see ``docs/gate.md``)::

    undecided = "fail"          # or "pass"
    timeout = 30                # default per-property timeout (s)

    [models]
    classifier = "model.onnx"

    [[properties]]              # a VNN-LIB file (1.0 or 2.0)
    name = "box-safety"
    model = "classifier"
    vnnlib = "safety.vnnlib"
    timeout = 20

    [[properties]]              # generated: L-inf robustness around samples
    name = "robust"
    model = "classifier"
    epsilon = 0.01
    inputs = [[0.1, 0.2], [0.5, -0.3]]
    labels = [0, 1]             # optional: default is the model's prediction
    clip = [-1.0, 1.0]          # optional
"""
from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from verifier.errors import InputError

UNDECIDED = ("unknown", "timeout")


@dataclass
class GateProperty:
    name: str
    model: str                       # resolved path
    timeout: float
    vnnlib: str | None = None        # resolved path
    center: list | None = None       # generated robustness property
    epsilon: float = 0.0
    label: int | None = None
    clip: tuple | None = None


@dataclass
class Suite:
    path: str
    properties: list[GateProperty]
    undecided: str = "fail"


@dataclass
class GateOutcome:
    name: str
    model: str
    status: str
    time: float
    message: str = ""
    counterexample: dict | None = None
    stats: dict = field(default_factory=dict)


def _read(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    import tomllib

    return tomllib.loads(text)


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and check a TOML/YAML suite; raises :class:`InputError` with the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such suite file")
    try:
        data = _read(path)
    except Exception as exc:  # tomllib/yaml raise their own types
        raise InputError(f"{path}: cannot parse suite: {exc}") from None
    folder = path.resolve().parent
    undecided = data.get("undecided", "fail")
    if undecided not in ("fail", "pass"):
        raise InputError(f"{path}: undecided must be 'fail' or 'pass', not {undecided!r}")
    default_timeout = float(data.get("timeout", 60.0))
    models = {name: str(folder / file) for name, file in (data.get("models") or {}).items()}
    properties: list[GateProperty] = []
    for number, entry in enumerate(data.get("properties") or []):
        name = str(entry.get("name", f"property{number}"))
        model_key = entry.get("model")
        model = models.get(model_key) or (str(folder / model_key) if model_key else None)
        if model is None or not os.path.isfile(model):
            raise InputError(f"{path}: property {name!r}: model {model_key!r} is not a declared model or a file")
        timeout = float(entry.get("timeout", default_timeout))
        if "vnnlib" in entry:
            properties.append(GateProperty(name, model, timeout, vnnlib=str(folder / entry["vnnlib"])))
        elif "inputs" in entry and "epsilon" in entry:
            labels = entry.get("labels") or [None] * len(entry["inputs"])
            if len(labels) != len(entry["inputs"]):
                raise InputError(f"{path}: property {name!r}: {len(labels)} labels for {len(entry['inputs'])} inputs")
            clip = tuple(entry["clip"]) if "clip" in entry else None
            for index, (center, label) in enumerate(zip(entry["inputs"], labels)):
                properties.append(GateProperty(f"{name}[{index}]", model, timeout, center=list(center),
                                               epsilon=float(entry["epsilon"]), label=label, clip=clip))
        else:
            raise InputError(f"{path}: property {name!r} needs 'vnnlib' or 'inputs' + 'epsilon'")
    if not properties:
        raise InputError(f"{path}: no [[properties]] listed")
    return Suite(path=str(path), properties=properties, undecided=undecided)


def _predicted_label(model_path: str, center) -> int:
    from verifier.validate import OrtModel, read_model_bytes

    model = OrtModel.load(model_path, read_model_bytes(model_path))
    outputs = model.evaluate(np.asarray([center], dtype=np.float64).reshape(1, -1))
    return int(np.argmax(np.asarray(outputs).reshape(-1)))


def run_property(prop: GateProperty, threads: int | None = None) -> GateOutcome:
    """Verify one property; bad input becomes an ``error`` outcome."""
    from verifier.api import verify
    from verifier.errors import NNVerifyError
    from verifier.spec_builder import SpecBuilder
    from vnnlib.errors import VnnlibError

    start = time.monotonic()
    try:
        if prop.vnnlib is not None:
            spec = Path(prop.vnnlib)
        else:
            label = prop.label if prop.label is not None else _predicted_label(prop.model, prop.center)
            spec = SpecBuilder.linf_ball(prop.center, prop.epsilon, prop.clip).robust(int(label))
        result = verify(prop.model, spec, timeout=prop.timeout, threads=threads)
    except (NNVerifyError, VnnlibError, ValueError) as exc:
        return GateOutcome(prop.name, prop.model, "error", time.monotonic() - start, message=str(exc))
    cex = result.counterexample.to_dict() if result.counterexample is not None else None
    return GateOutcome(prop.name, prop.model, result.status, result.time, result.message, cex,
                       {k: v for k, v in result.stats.items() if k in ("num_clauses", "num_boxes")})


def run_suite(suite: Suite, threads: int | None = None, progress=None) -> list[GateOutcome]:
    outcomes = []
    for prop in suite.properties:
        outcome = run_property(prop, threads)
        if progress is not None:
            progress(outcome)
        outcomes.append(outcome)
    return outcomes


def gate_exit_code(outcomes: list[GateOutcome], undecided: str = "fail") -> int:
    """1 violated > 3 error > 2 undecided (when ``undecided == "fail"``) > 0."""
    statuses = {o.status for o in outcomes}
    if "sat" in statuses:
        return 1
    if "error" in statuses:
        return 3
    if undecided == "fail" and statuses & set(UNDECIDED):
        return 2
    return 0


def format_summary(outcomes: list[GateOutcome]) -> str:
    verdict = {"unsat": "verified", "sat": "VIOLATED", "unknown": "undecided", "timeout": "undecided (timeout)",
               "error": "ERROR"}
    width = max([8] + [len(o.name) for o in outcomes])
    lines = [f"{'property':<{width}}  {'result':<20} {'time':>8}", "-" * (width + 31)]
    for o in outcomes:
        lines.append(f"{o.name:<{width}}  {verdict.get(o.status, o.status):<20} {o.time:7.2f}s"
                     + (f"  {o.message}" if o.status == "error" else ""))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("unsat", "sat", "unknown", "timeout", "error")}
    lines.append(f"{counts['unsat']} verified, {counts['sat']} violated, "
                 f"{counts['unknown'] + counts['timeout']} undecided, {counts['error']} errors")
    return "\n".join(lines)


def write_junit(outcomes: list[GateOutcome], path: str | os.PathLike, suite_name: str = "nnverify-gate",
                undecided: str = "fail") -> None:
    """JUnit XML: one testcase per property; violated/errored ones carry a
    ``<failure>``/``<error>`` naming the property; undecided ones fail or are skipped."""
    failures = sum(o.status == "sat" or (o.status in UNDECIDED and undecided == "fail") for o in outcomes)
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(outcomes)), failures=str(failures),
                       errors=str(sum(o.status == "error" for o in outcomes)),
                       skipped=str(sum(o.status in UNDECIDED and undecided == "pass" for o in outcomes)),
                       time=f"{sum(o.time for o in outcomes):.3f}")
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=Path(o.model).stem, name=o.name, time=f"{o.time:.3f}")
        if o.status == "sat":
            failure = ET.SubElement(case, "failure", type="violated",
                                    message=f"property {o.name} violated: counterexample found")
            failure.text = json.dumps(o.counterexample)
        elif o.status == "error":
            ET.SubElement(case, "error", type="error", message=f"property {o.name}: {o.message}")
        elif o.status in UNDECIDED:
            tag = "failure" if undecided == "fail" else "skipped"
            ET.SubElement(case, tag, type="undecided", message=f"property {o.name} undecided ({o.status})")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_json(outcomes: list[GateOutcome], path: str | os.PathLike, exit_code: int) -> None:
    from verifier.results import _jsonable

    data = {"exit_code": exit_code, "properties": [_jsonable(asdict(o)) for o in outcomes]}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def main(args) -> int:
    """The ``nnverify gate`` command (arguments parsed by ``verifier.cli``)."""
    import sys

    from verifier.errors import NNVerifyError

    try:
        suite = load_suite(args.suite)
    except NNVerifyError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return 3
    if args.allow_undecided:
        suite.undecided = "pass"

    def progress(outcome: GateOutcome) -> None:
        if not args.quiet:
            print(f"  {outcome.name}: {outcome.status} ({outcome.time:.2f}s)", file=sys.stderr, flush=True)

    outcomes = run_suite(suite, threads=args.threads, progress=progress)
    code = gate_exit_code(outcomes, suite.undecided)
    print(format_summary(outcomes))
    if args.junit:
        write_junit(outcomes, args.junit, Path(args.suite).stem, suite.undecided)
    if args.json:
        write_json(outcomes, args.json, code)
    print(f"gate: {'PASS' if code == 0 else 'FAIL'} (exit {code})")
    return code
