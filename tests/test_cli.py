"""The ``nnverify`` command end to end: verdicts, exit codes, result files,
lazy imports, signals and the ``check`` diagnostics."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from verifier.cli import main
from verifier.results import parse_vnncomp

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
EXAMPLES = REPO / "examples"
ACAS = BENCHMARKS / "2022_acasxu"
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _python(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=ENV, **kwargs)


def test_example_sat_end_to_end(tmp_path):
    results, report = tmp_path / "r.txt", tmp_path / "r.json"
    done = _python("-m", "verifier", "run", str(EXAMPLES / "example.onnx"), str(EXAMPLES / "example_sat.vnnlib"),
                   "--results-file", str(results), "--json", str(report), "--seed", "5")
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("nnverify: sat in ")
    status, values = parse_vnncomp(results.read_text())
    assert status == "sat"
    x = np.array([values["X_0"], values["X_1"]], dtype=np.float32)
    assert np.all(np.abs(x) <= 1.0)
    session = ort.InferenceSession(str(EXAMPLES / "example.onnx"), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x[None]})[0][0].astype(np.float64)
    np.testing.assert_array_equal(y, [values["Y_0"], values["Y_1"]])
    threshold = float((EXAMPLES / "example_sat.vnnlib").read_text().split("(- Y_0 Y_1)")[1].strip(" )\n"))
    assert y[0] - y[1] <= threshold
    data = json.loads(report.read_text())
    assert data["status"] == "sat" and data["counterexample"]["inputs"] == [float(v) for v in x]


def test_example_unsat_is_never_falsified(tmp_path, capsys):
    results = tmp_path / "r.txt"
    code = main(["run", str(EXAMPLES / "example.onnx"), str(EXAMPLES / "example_unsat.vnnlib"),
                 "--timeout", "20", "--results-file", str(results), "--threads", "1"])
    assert code in (0, 2)  # verified, or not decided without the bound engine: never sat, never error
    assert results.read_text().strip() in ({"unsat"} if code == 0 else {"unknown", "timeout"})


def test_help_is_fast_and_imports_neither_torch_nor_onnxruntime():
    start = time.monotonic()
    done = _python("-m", "verifier", "--help")
    assert done.returncode == 0 and "run" in done.stdout and "exit codes" in done.stdout
    assert time.monotonic() - start < 5.0
    probe = _python("-c", "import sys, verifier.cli, verifier.pipeline; "
                          "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    assert probe.stdout.strip() == "[]", probe.stderr


def test_sat_acas_finishes_without_importing_torch(tmp_path):
    code = ("import sys; from verifier.cli import main; "
            f"rc = main(['run', {str(ACAS / 'onnx' / 'ACASXU_run2a_1_9_batch_2000.onnx')!r}, "
            f"{str(ACAS / 'vnnlib' / 'prop_4.vnnlib')!r}, '--results-file', {str(tmp_path / 'r.txt')!r}]); "
            "print('torch' in sys.modules, rc)")
    done = _python("-c", code)
    assert done.stdout.strip().splitlines()[-1] == "False 1", done.stderr
    assert (tmp_path / "r.txt").read_text().startswith("sat\n((X_0 ")


# A child whose onnxruntime stage blocks, so that the signal always lands mid-run.
_SLOW_CHILD = """
import sys, time
import verifier.pipeline as pipeline
def slow(*args, **kwargs):
    print("stage started", file=sys.stderr, flush=True)
    time.sleep(60)
pipeline.ort_falsify = slow
from verifier.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, "timeout"), (signal.SIGINT, "unknown")])
def test_signal_still_writes_result(tmp_path, signum, status):
    results = tmp_path / "r.txt"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, "run", str(EXAMPLES / "example.onnx"),
                              str(EXAMPLES / "example_unsat.vnnlib"), "--results-file", str(results)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    try:
        assert child.stderr.readline().strip() == "stage started"
        child.send_signal(signum)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 2, err
    assert results.read_text() == status + "\n"
    assert "Traceback" not in err and f"interrupted by {signal.Signals(signum).name}" in err


def test_check_reports_shapes_operators_and_agreement(capsys):
    code = main(["check", str(EXAMPLES / "example.onnx"), str(EXAMPLES / "example_sat.vnnlib"), "--points", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "input 'x' [1, 2] (2 values), 2 outputs" in out
    assert "1 boxes, 1 clauses, 1 rows" in out
    assert "ReLU x2" in out.replace("Relu", "ReLU")
    difference = float(out.split("(1 + |ort|) = ")[1].split()[0])
    assert difference < 1e-5


def test_version_and_no_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("nnverify ")
    assert main([]) == 3


def test_stdout_is_only_the_verdict_line_when_the_mip_runs(tmp_path):
    """safenlp 6000 is decided by the exact MIP hand-over; HiGHS's banner
    (printed to stdout by its first solver object) must not reach stdout."""
    safenlp, report = BENCHMARKS / "2024_safenlp", tmp_path / "r.json"
    done = _python("-m", "verifier", "run", str(safenlp / "onnx" / "ruarobot" / "perturbations_0.onnx"),
                   str(safenlp / "vnnlib" / "ruarobot" / "hyperrectangle_6000.vnnlib"), "--timeout", "60",
                   "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "root_mip" in json.loads(report.read_text())["stats"]["bab"]   # HiGHS really ran
    assert done.stdout.splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith("nnverify: unsat in ")


def test_batch_probe_of_a_fixed_batch_model_is_silent():
    """cifar_biasfield's ONNX reshapes to a fixed batch of 1: the probe that
    tries a dynamic batch fails inside onnxruntime, which must not print its
    error log on the terminal (the model is then run point by point)."""
    model = BENCHMARKS / "2022_cifar_biasfield" / "onnx" / "cifar_bias_field_9.onnx"
    done = _python("-c", "import sys; from verifier.validate import OrtModel; "
                         f"print(OrtModel.load({str(model)!r}).batched)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert done.stderr == ""
