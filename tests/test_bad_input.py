"""Bad input: every case ends with one line ``nnverify: error: ...`` naming the
file (and the place), exit code 3, an ``error`` result file where writable,
and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verifier.cli import main
from verifier.errors import InputError
from verifier.validate import check_spec_fits
from vnnlib import Clause, InputBox, Property, Spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODEL = EXAMPLES / "example.onnx"

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"
GOOD_OUTPUT = "(assert (<= Y_0 -100))\n"


def _run(capsys, tmp_path, model, prop, *extra) -> tuple[int, str, str]:
    results = tmp_path / "result.txt"
    code = main(["run", str(model), str(prop), "--timeout", "20", "--results-file", str(results), *extra])
    captured = capsys.readouterr()
    return code, captured.err, results.read_text() if results.exists() else ""


def _assert_one_line_error(code, err, result_text, *fragments):
    assert code == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("nnverify: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result_text == "error\n"


def _prop(tmp_path, text, name="p.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_model_file(capsys, tmp_path):
    missing = tmp_path / "nope.onnx"
    _assert_one_line_error(*_run(capsys, tmp_path, missing, EXAMPLES / "example_sat.vnnlib"), str(missing), "no such file")


def test_missing_property_file(capsys, tmp_path):
    missing = tmp_path / "nope.vnnlib"
    _assert_one_line_error(*_run(capsys, tmp_path, MODEL, missing), str(missing), "no such file")


def test_truncated_onnx(capsys, tmp_path):
    broken = tmp_path / "truncated.onnx"
    broken.write_bytes(MODEL.read_bytes()[: MODEL.stat().st_size // 2])
    _assert_one_line_error(*_run(capsys, tmp_path, broken, EXAMPLES / "example_sat.vnnlib"), str(broken))


def test_garbage_onnx(capsys, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_one_line_error(*_run(capsys, tmp_path, garbage, EXAMPLES / "example_sat.vnnlib"), str(garbage))


def test_empty_and_corrupt_gzip_onnx(capsys, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _assert_one_line_error(*_run(capsys, tmp_path, empty, EXAMPLES / "example_sat.vnnlib"), str(empty), "empty")
    bad_gz = tmp_path / "bad.onnx.gz"
    bad_gz.write_bytes(b"\x1f\x8b" + b"not really gzip")
    _assert_one_line_error(*_run(capsys, tmp_path, bad_gz, EXAMPLES / "example_sat.vnnlib"), str(bad_gz))


def test_unsupported_operator(capsys, tmp_path):
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax", axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    # Hardmax outputs are 0 or 1: "Y_0 <= -100" is unsat, so no attack can end the run early
    prop = _prop(tmp_path, HEADER + BOX + GOOD_OUTPUT)
    _assert_one_line_error(*_run(capsys, tmp_path, path, prop), "Hardmax", "the_hardmax")


@pytest.mark.parametrize("body, fragment", [
    (HEADER + BOX + "(assert (<= Y_0 1)\n", "p.vnnlib:"),                  # unbalanced parentheses
    (HEADER + BOX + "(assert (<= Y_7 1))\n", "Y_7"),                      # undeclared variable
    (HEADER + BOX + "(assert (<= Y_0 1.2.3))\n", "1.2.3"),                # bad number
    (HEADER + BOX + "(check-unicorns)\n" + GOOD_OUTPUT, "check-unicorns"),  # unknown command
])
def test_vnnlib_syntax_errors_name_file_and_place(capsys, tmp_path, body, fragment):
    prop = _prop(tmp_path, body)
    code, err, result = _run(capsys, tmp_path, MODEL, prop)
    _assert_one_line_error(code, err, result, str(prop), fragment)
    # file:line:col
    assert any(part.isdigit() for part in err.split(str(prop))[1].split(":")[1:3])


def test_input_size_mismatch_names_both_sizes(capsys, tmp_path):
    text = HEADER.replace("(declare-const Y_0", "(declare-const X_2 Real)\n(declare-const Y_0")
    prop = _prop(tmp_path, text + BOX + "(assert (>= X_2 0))\n(assert (<= X_2 1))\n" + GOOD_OUTPUT)
    _assert_one_line_error(*_run(capsys, tmp_path, MODEL, prop), "3 inputs", "2 input values")


def test_output_size_mismatch(capsys, tmp_path):
    prop = _prop(tmp_path, HEADER + "(declare-const Y_2 Real)\n" + BOX + GOOD_OUTPUT)
    _assert_one_line_error(*_run(capsys, tmp_path, MODEL, prop), "3 outputs", "2 output values")


@pytest.mark.parametrize("bound", ["nan", "inf", "1e999"])
def test_non_finite_bounds(capsys, tmp_path, bound):
    prop = _prop(tmp_path, HEADER + BOX.replace("(<= X_1 1)", f"(<= X_1 {bound})") + GOOD_OUTPUT)
    _assert_one_line_error(*_run(capsys, tmp_path, MODEL, prop), str(prop))


def test_lower_above_upper(capsys, tmp_path):
    prop = _prop(tmp_path, HEADER + BOX.replace("(>= X_1 -1)", "(>= X_1 2)") + GOOD_OUTPUT)
    _assert_one_line_error(*_run(capsys, tmp_path, MODEL, prop), str(prop), "X_1")


def test_check_spec_fits_rejects_programmatic_bad_boxes():
    clause = Clause(np.array([[1.0, 0.0]]), np.array([0.0]))
    nan_box = Spec([Property(InputBox(np.array([0.0, np.nan]), np.array([1.0, 1.0])), [clause])], 2, 2, "api")
    with pytest.raises(InputError, match="X_1 has a non-finite bound"):
        check_spec_fits(nan_box, 2, 2)
    empty = Spec([Property(InputBox(np.array([0.0, 2.0]), np.array([1.0, 1.0])), [clause])], 2, 2, "api")
    with pytest.raises(InputError, match="X_1 has lower bound 2.0 > upper bound 1.0"):
        check_spec_fits(empty, 2, 2)


def test_unwritable_results_path(capsys, tmp_path):
    target = tmp_path / "no_such_folder" / "result.txt"
    code = main(["run", str(MODEL), str(EXAMPLES / "example_sat.vnnlib"), "--results-file", str(target)])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert err.strip().splitlines() == [f"nnverify: error: {target}: cannot write results: folder "
                                        f"{target.parent} does not exist"]
    code = main(["run", str(MODEL), str(EXAMPLES / "example_sat.vnnlib"), "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3 and "is a directory" in err


def test_bad_usage_exits_3(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", str(MODEL)])
    assert stop.value.code == 3
    with pytest.raises(SystemExit) as stop:
        main(["run", str(MODEL), "p.vnnlib", "--timeout", "-1"])
    assert stop.value.code == 3
    assert "positive" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback_unless_debug(tmp_path):
    missing = tmp_path / "nope.onnx"
    command = [sys.executable, "-m", "verifier", "run", str(missing), str(EXAMPLES / "example_sat.vnnlib")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    plain = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert plain.returncode == 3
    assert plain.stderr.strip() == f"nnverify: error: {missing}: no such file"
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, cwd=REPO, env=env)
    assert debug.returncode == 3 and "Traceback" in debug.stderr


def test_unexpected_exception_is_one_line_and_exit_3(capsys, tmp_path, monkeypatch):
    import verifier.pipeline

    def explode(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(verifier.pipeline, "run", explode)
    code, err, result = _run(capsys, tmp_path, MODEL, EXAMPLES / "example_sat.vnnlib")
    _assert_one_line_error(code, err, result, "internal error: RuntimeError: boom", "--debug")
