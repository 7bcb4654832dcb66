"""Benchmark reports: VNN-COMP score, markdown table, cactus plot, results.csv round trip."""
from __future__ import annotations

import pytest

from benchmarks.harness import Outcome
from benchmarks.report import markdown_table, read_results, vnncomp_score, write_report


def _outcome(category, expected, verdict, seconds):
    return Outcome(benchmark=category, category=category, onnx="n.onnx", vnnlib="p.vnnlib", expected=expected,
                   verdict=verdict, seconds=seconds, limit=60.0, exit_code=0, correct="", score=0, message="")


OUTCOMES = [
    _outcome("acasxu", "sat", "sat", 1.5),
    _outcome("acasxu", "unsat", "unsat", 4.0),
    _outcome("acasxu", "unsat", "sat", 2.0),      # wrong: -150
    _outcome("mnist", "unsat", "timeout", 60.0),
    _outcome("mnist", "unknown", "unsat", 3.0),   # no ground truth: 0
    _outcome("mnist", "sat", "sat", 0.5),
]


def test_vnncomp_score():
    score = vnncomp_score(OUTCOMES)
    assert score == {"score": 3 * 10 - 150, "correct": 3, "wrong": 1, "solved_time": 6.0, "instances": 6,
                     "max_score": 50}


def test_markdown_table_rows():
    table = markdown_table(OUTCOMES)
    lines = table.splitlines()
    assert lines[2] == "| acasxu | 3 | 1 | 1 | 1 | 0 | 2.75 | -130 |"
    assert lines[3] == "| mnist | 3 | 1 | 0 | 0 | 2 | 0.50 | 10 |"
    assert lines[4] == "| **total** | 6 | 2 | 1 | 1 | 2 | 1.50 | -120 |"
    assert "VNN-COMP score -120 of 50 (3 correct, 1 wrong)" in table


def test_write_report_round_trip(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.harness import judge

    outcomes = []
    for o in OUTCOMES:
        o.correct, o.score = judge(o.expected, o.verdict)
        outcomes.append(o)
    paths = write_report(outcomes, tmp_path, "unit test")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["plot"].stat().st_size > 5000
    assert read_results(paths["csv"]) == outcomes
    assert "| **total** | 6 |" in paths["markdown"].read_text()
