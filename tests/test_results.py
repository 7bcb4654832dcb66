"""Result dataclass, VNN-COMP/JSON writers and exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from verifier.results import (Counterexample, Result, exit_code, format_vnncomp, parse_vnncomp, write_json,
                              write_vnncomp)


def _sat_result() -> Result:
    cex = Counterexample(inputs=np.array([0.1, -2.5, np.float32(1 / 3)]), outputs=np.array([1e-7, -3.0]))
    return Result("sat", counterexample=cex, time=0.25, message="found", stats={"n": np.int64(3), "x": np.inf})


def test_exit_codes_match_documentation():
    assert [exit_code(s) for s in ("unsat", "sat", "unknown", "timeout", "error")] == [0, 1, 2, 2, 3]
    assert exit_code("garbage") == 3


def test_sat_needs_counterexample_and_status_is_checked():
    with pytest.raises(ValueError):
        Result("sat")
    with pytest.raises(ValueError):
        Result("verified")


def test_vnncomp_sat_format_round_trips_exact_values():
    result = _sat_result()
    text = format_vnncomp(result)
    lines = text.splitlines()
    assert lines[0] == "sat"
    assert lines[1] == "((X_0 0.1)"
    assert lines[-1] == " (Y_1 -3.0))"
    assert len(lines) == 1 + 3 + 2
    status, values = parse_vnncomp(text)
    assert status == "sat"
    assert values["X_2"] == float(np.float32(1 / 3))  # the float32 value, bit for bit
    assert values["Y_0"] == 1e-7
    assert sorted(values) == ["X_0", "X_1", "X_2", "Y_0", "Y_1"]


@pytest.mark.parametrize("status", ["unsat", "unknown", "timeout", "error"])
def test_vnncomp_other_statuses_are_one_word(status, tmp_path):
    path = tmp_path / "r.txt"
    write_vnncomp(Result(status), path)
    assert path.read_text() == status + "\n"
    assert parse_vnncomp(path.read_text()) == (status, {})


def test_parse_accepts_legacy_words():
    assert parse_vnncomp("holds\n")[0] == "unsat"
    assert parse_vnncomp("violated\n((X_0 1)\n (Y_0 2))")[0] == "sat"
    assert parse_vnncomp("")[0] == "error"


def test_json_writer_is_valid_json_with_non_finite_stats(tmp_path):
    path = tmp_path / "r.json"
    write_json(_sat_result(), path)
    data = json.loads(path.read_text())
    assert data["status"] == "sat"
    assert data["counterexample"]["inputs"][1] == -2.5
    assert data["stats"] == {"n": 3, "x": "inf"}
    assert data["time"] == 0.25


def test_writer_overwrites_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("stale content that is longer than the new one\n")
    write_vnncomp(Result("unsat"), path)
    assert path.read_text() == "unsat\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_writer_raises_on_unwritable_folder(tmp_path):
    with pytest.raises(OSError):
        write_vnncomp(Result("unsat"), tmp_path / "missing" / "r.txt")


def test_summary_line():
    assert Result("unsat", time=1.234).summary() == "unsat in 1.23s"
    assert Result("unknown", time=0, message="gave up").summary() == "unknown in 0.00s (gave up)"
