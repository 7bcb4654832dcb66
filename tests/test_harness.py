"""Benchmark harness: reading instances.csv, judging, the table, and real
subprocess runs (including a kill on overrun and a wrong verdict)."""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from benchmarks.__main__ import main as harness_main
from benchmarks.harness import (Outcome, format_table, judge, load_instances, run_instance, summarize)

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
EXAMPLES = REPO / "examples"


def test_load_real_instances_with_categories():
    instances = load_instances(BENCHMARKS / "instances.csv")
    assert len(instances) == 75
    assert sum(i.expected == "sat" for i in instances) == 27
    assert sum(i.expected == "unsat" for i in instances) == 46
    categories = {i.category for i in instances}
    assert categories == {"acasxu", "mnist_fc", "conv_relu", "nonlinear", "rl_control", "odd_graph"}
    assert all((BENCHMARKS / i.onnx).exists() and (BENCHMARKS / i.vnnlib).exists() for i in instances)
    acas = load_instances(BENCHMARKS / "instances.csv", only="acasxu")
    assert len(acas) == 13 and all(i.category == "acasxu" for i in acas)


def test_judge_scores_the_vnncomp_way():
    assert judge("sat", "sat") == ("yes", 10)
    assert judge("unsat", "unsat") == ("yes", 10)
    assert judge("unsat", "sat") == ("WRONG", -150)
    assert judge("sat", "unsat") == ("WRONG", -150)
    assert judge("sat", "timeout") == ("no", 0)
    assert judge("unknown", "sat") == ("no", 0)


def _outcome(category, verdict, expected, seconds):
    correct, score = judge(expected, verdict)
    return Outcome("b", category, "n.onnx", "p.vnnlib", expected, verdict, seconds, 60, 0, correct, score, "")


def test_summary_table():
    outcomes = [_outcome("a", "sat", "sat", 1.0), _outcome("a", "unsat", "unsat", 3.0),
                _outcome("a", "timeout", "sat", 60.0), _outcome("b", "sat", "unsat", 2.0)]
    table = summarize(outcomes)
    assert [row["category"] for row in table] == ["a", "b", "total"]
    assert table[0] == {"category": "a", "instances": 3, "sat": 1, "unsat": 1, "wrong": 0, "median_s": 2.0, "score": 20}
    assert table[2]["wrong"] == 1 and table[2]["score"] == -130
    text = format_table(table)
    assert "total" in text.splitlines()[-1] and "-130" in text


def _csv(tmp_path, rows) -> Path:
    path = tmp_path / "instances.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "onnx", "vnnlib", "timeout", "expected"])
        writer.writerows(rows)
    return path


def test_harness_runs_cli_and_flags_wrong_verdicts(tmp_path, capsys):
    onnx_path = EXAMPLES / "example.onnx"  # absolute paths stay absolute under the CSV folder
    path = _csv(tmp_path, [["example", onnx_path, EXAMPLES / "example_sat.vnnlib", 30, "sat"],
                           ["example", onnx_path, EXAMPLES / "example_sat.vnnlib", 30, "unsat"]])
    out_csv = tmp_path / "results.csv"
    code = harness_main(["run", str(path), "--cap", "20", "--jobs", "2", "--out", str(out_csv), "--", "--threads", "1"])
    assert code == 1  # the second row's expected verdict is wrong on purpose
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["verdict"] for r in rows] == ["sat", "sat"]
    assert [r["correct"] for r in rows] == ["yes", "WRONG"]
    assert [int(r["score"]) for r in rows] == [10, -150]
    assert "WRONG" in capsys.readouterr().out


def test_overrun_is_killed_and_counted_as_timeout(tmp_path):
    instance = load_instances(_csv(tmp_path, [["slow", "m.onnx", "p.vnnlib", 1, "sat"]]))[0]
    sleeper = (sys.executable, "-c", "import time; time.sleep(30)")
    start = time.monotonic()
    outcome = run_instance(instance, tmp_path, cap=60, grace=0.5, cli=sleeper)
    assert time.monotonic() - start < 10
    assert outcome.verdict == "timeout" and outcome.correct == "no" and outcome.limit == 1


def test_missing_result_file_is_an_error(tmp_path):
    instance = load_instances(_csv(tmp_path, [["x", "m.onnx", "p.vnnlib", 5, "sat"]]))[0]
    outcome = run_instance(instance, tmp_path, cap=5, cli=(sys.executable, "-c", "pass"))
    assert outcome.verdict == "error" and outcome.score == 0
