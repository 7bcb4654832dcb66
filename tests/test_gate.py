"""CI gate: all-verified suite -> exit 0; a violated property -> exit 1 and named
in JUnit; an undecided one -> the configured behaviour; standard verify/supports."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from verifier.cli import main as cli_main
from verifier.gate import load_suite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ACAS = ROOT.parent / "shared" / "benchmarks" / "2022_acasxu"


@pytest.fixture()
def suite_dir(tmp_path):
    for name in ("example.onnx", "example_sat.vnnlib", "example_unsat.vnnlib"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    return tmp_path


def _write_suite(folder: Path, body: str, undecided: str = "fail") -> Path:
    path = folder / "suite.toml"
    path.write_text(f'undecided = "{undecided}"\ntimeout = 20\n[models]\nnet = "example.onnx"\n' + body)
    return path


ROBUST = """
[[properties]]
name = "robust"
model = "net"
epsilon = 0.01
inputs = [[0.5, -0.5]]
"""
VIOLATED = """
[[properties]]
name = "must-fail"
model = "net"
vnnlib = "example_sat.vnnlib"
"""
UNDECIDED = """
[[properties]]
name = "too-little-time"
model = "net"
vnnlib = "example_unsat.vnnlib"
timeout = 0.001
"""


def _run(suite: Path, *extra: str, out_dir: Path | None = None) -> tuple[int, ET.Element, dict]:
    out_dir = out_dir or suite.parent
    junit, report = out_dir / "junit.xml", out_dir / "report.json"
    code = cli_main(["gate", str(suite), "--junit", str(junit), "--json", str(report), "--quiet",
                     "--threads", "1", *extra])
    return code, ET.parse(junit).getroot(), json.loads(report.read_text())


def test_worked_example_suite_passes(tmp_path):
    code, junit, report = _run(EXAMPLES / "gate_suite.toml", out_dir=tmp_path)
    assert code == 0 and report["exit_code"] == 0
    assert [p["status"] for p in report["properties"]] == ["unsat"] * 3
    assert junit.get("tests") == "3" and junit.get("failures") == "0"


def test_violated_property_fails_and_is_named_in_junit(suite_dir):
    code, junit, report = _run(_write_suite(suite_dir, ROBUST + VIOLATED))
    assert code == 1
    failures = [case for case in junit.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failures] == ["must-fail"]
    assert "must-fail" in failures[0].find("failure").get("message")
    counterexample = json.loads(failures[0].find("failure").text)
    assert len(counterexample["inputs"]) == 2
    assert {p["name"]: p["status"] for p in report["properties"]} == {"robust[0]": "unsat", "must-fail": "sat"}


def test_undecided_fails_or_passes_as_configured(suite_dir):
    code, junit, _ = _run(_write_suite(suite_dir, ROBUST + UNDECIDED, undecided="fail"))
    assert code == 2
    case = next(c for c in junit.iter("testcase") if c.get("name") == "too-little-time")
    assert case.find("failure").get("type") == "undecided"
    code, junit, _ = _run(_write_suite(suite_dir, ROBUST + UNDECIDED, undecided="pass"))
    assert code == 0
    case = next(c for c in junit.iter("testcase") if c.get("name") == "too-little-time")
    assert case.find("skipped") is not None and case.find("failure") is None
    code, _, _ = _run(_write_suite(suite_dir, ROBUST + UNDECIDED, undecided="fail"), "--allow-undecided")
    assert code == 0


def test_yaml_suite_and_bad_suites(suite_dir, capsys):
    yaml_suite = suite_dir / "suite.yaml"
    yaml_suite.write_text("models: {net: example.onnx}\nproperties:\n"
                          "  - {name: p, model: net, vnnlib: example_unsat.vnnlib, timeout: 5}\n")
    assert [p.name for p in load_suite(yaml_suite).properties] == ["p"]
    bad = _write_suite(suite_dir, '[[properties]]\nname = "x"\nmodel = "missing"\nvnnlib = "a.vnnlib"\n')
    assert cli_main(["gate", str(bad)]) == 3
    assert "model 'missing'" in capsys.readouterr().err


def _standard(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_standard_verify_prints_verdict_and_assignment(tmp_path, capsys):
    sat_query = tmp_path / "sat.vnnlib"
    sat_query.write_text((ROOT / "tests" / "data" / "example_v2.vnnlib").read_text().replace("-1.058660", "-0.5"))
    code, out, _ = _standard(capsys, "verify", str(sat_query), "--network", "example=examples/example.onnx",
                             "--timeout", "20", "--threads", "1")
    lines = out.splitlines()
    assert code == 1 and lines[0] == "sat" and lines[1] == "x Real [1,2]" and lines[4] == "y Real [1,2]"
    x, y = [float(v) for v in lines[2:4]], [float(v) for v in lines[5:7]]
    assert len(lines) == 7 and all(-1.0 <= v <= 1.0 for v in x) and y[0] - y[1] <= -0.5
    query = ROOT / "tests" / "data" / "example_v2.vnnlib"
    code, out, _ = _standard(capsys, "verify", str(query), "--network", "example=examples/example.onnx",
                             "--timeout", "20", "--threads", "1")
    assert code == 0 and out.splitlines() == ["unsat"]
    code, out, err = _standard(capsys, "verify", str(query), "--network", "other=examples/example.onnx")
    assert code == 3 and out == "" and "missing: ['example']" in err
    code, out, _ = _standard(capsys, "verify", str(query), "--network", "example=examples/example.onnx",
                             "--timeout", "0.001")
    assert code == 2 and out.splitlines() == ["timed-out"]


def test_supports_reports_capabilities(capsys):
    assert _standard(capsys, "supports", "--vnnlib-versions")[1].split() == ["2.0", "2.0"]
    operators = _standard(capsys, "supports", "--onnx-operators")[1].split()
    assert {"Relu", "Gemm", "Conv", "MatMul", "Sigmoid"} <= set(operators)
    assert _standard(capsys, "supports", "--multiple-network-theories")[1] == ""
    assert _standard(capsys, "supports", "--arithmetic-complexity-theories")[1].split() == ["LIN"]
