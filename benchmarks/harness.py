"""Benchmark harness: run the ``nnverify`` CLI on every instance of an
``instances.csv`` and score the verdicts.

Each instance runs as its own subprocess (so start-up time counts), with the
time limit ``min(instance timeout, cap)``; the process gets ``grace`` extra
seconds and is killed after that (verdict ``timeout``).  Instances run
concurrently on ``jobs`` worker threads, each driving one child process.

Scoring follows VNN-COMP: a correct ``sat``/``unsat`` earns +10, a wrong one
-150; unknown/timeout/error earn 0.  An instance whose ``expected`` verdict is
``unknown`` is never counted wrong and scores 0.
"""
from __future__ import annotations

import csv
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SCORE_CORRECT = 10
SCORE_WRONG = -150
DECIDED = ("sat", "unsat")


@dataclass
class Instance:
    index: int
    benchmark: str
    onnx: str       # as written in the CSV (relative to its folder)
    vnnlib: str
    timeout: float
    expected: str
    category: str


@dataclass
class Outcome:
    benchmark: str
    category: str
    onnx: str
    vnnlib: str
    expected: str
    verdict: str
    seconds: float
    limit: float
    exit_code: int
    correct: str     # "yes", "no" (undecided) or "WRONG"
    score: int
    message: str


def load_instances(csv_path: str | os.PathLike, only: str | None = None) -> list[Instance]:
    """Rows of ``instances.csv`` (``benchmark,onnx,vnnlib,timeout,expected,...``),
    with categories from ``instances_meta.csv`` beside it (same row order) when
    present, else the benchmark name; ``only`` filters by regex on
    ``benchmark/onnx/vnnlib``."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"benchmark", "onnx", "vnnlib", "timeout"} - set(rows[0] if rows else ())
    if rows and missing:
        raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
    categories: list[str] = []
    meta_path = csv_path.with_name("instances_meta.csv")
    if meta_path.exists():
        with open(meta_path, newline="") as handle:
            meta = list(csv.DictReader(handle))
        if len(meta) == len(rows) and all(m.get("benchmark") == r["benchmark"] for m, r in zip(meta, rows)):
            categories = [m.get("category") or m["benchmark"] for m in meta]
    pattern = re.compile(only) if only else None
    instances = []
    for index, row in enumerate(rows):
        instance = Instance(index=index, benchmark=row["benchmark"], onnx=row["onnx"], vnnlib=row["vnnlib"],
                            timeout=float(row["timeout"]), expected=(row.get("expected") or "unknown").strip(),
                            category=categories[index] if categories else row["benchmark"])
        if pattern and not pattern.search(f"{instance.benchmark}/{instance.onnx}/{instance.vnnlib}"):
            continue
        instances.append(instance)
    return instances


def judge(expected: str, verdict: str) -> tuple[str, int]:
    """``(correct, score)``: "yes" +10, "WRONG" -150, "no" 0."""
    if verdict not in DECIDED:
        return "no", 0
    if expected not in DECIDED:
        return "no", 0
    if verdict == expected:
        return "yes", SCORE_CORRECT
    return "WRONG", SCORE_WRONG


CLI = (sys.executable, "-m", "verifier")


def run_instance(instance: Instance, root: Path, cap: float, grace: float = 5.0,
                 extra_args: tuple[str, ...] = (), cli: tuple[str, ...] = CLI) -> Outcome:
    """Run the CLI (``cli run ONNX VNNLIB --timeout T --results-file F ...``)
    on one instance and read its result file."""
    limit = min(instance.timeout, cap)
    with tempfile.TemporaryDirectory(prefix="nnverify-bench-") as folder:
        results_file = Path(folder) / "result.txt"
        command = [*cli, "run", str(root / instance.onnx), str(root / instance.vnnlib),
                   "--timeout", f"{limit:g}", "--results-file", str(results_file), *extra_args]
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=limit + grace)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the child's own session: nothing else is touched
            stdout, stderr = process.communicate()
            killed = True
        seconds = time.monotonic() - start
        verdict = "timeout" if killed else _read_verdict(results_file)
    message = (stderr.strip().splitlines() or [""])[-1] if verdict == "error" else ""
    correct, score = judge(instance.expected, verdict)
    return Outcome(benchmark=instance.benchmark, category=instance.category, onnx=instance.onnx,
                   vnnlib=instance.vnnlib, expected=instance.expected, verdict=verdict, seconds=round(seconds, 3),
                   limit=limit, exit_code=-9 if killed else process.returncode, correct=correct, score=score,
                   message=message[:200])


def _read_verdict(path: Path) -> str:
    try:
        first = path.read_text().strip().splitlines()
    except OSError:
        return "error"
    return first[0].strip() if first else "error"


def run_all(instances: list[Instance], root: Path, cap: float, jobs: int = 1, grace: float = 5.0,
            extra_args: tuple[str, ...] = (), progress=None) -> list[Outcome]:
    """Run every instance (``jobs`` at a time); outcomes in instance order."""
    def one(instance: Instance) -> Outcome:
        outcome = run_instance(instance, root, cap, grace, extra_args)
        if progress is not None:
            progress(instance, outcome)
        return outcome

    if jobs <= 1:
        return [one(i) for i in instances]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each worker drives one child process
        return list(pool.map(one, instances))


def write_csv(outcomes: list[Outcome], path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(Outcome)])
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow(asdict(outcome))


def summarize(outcomes: list[Outcome]) -> list[dict]:
    """Per category (in first-seen order) and a final ``total`` row: instances,
    sat/unsat solved, wrong, median wall time of the decided ones, score."""
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.category, []).append(outcome)
    groups["total"] = list(outcomes)
    table = []
    for name, group in groups.items():
        solved = [o for o in group if o.correct == "yes"]
        table.append({
            "category": name,
            "instances": len(group),
            "sat": sum(o.verdict == "sat" and o.correct == "yes" for o in group),
            "unsat": sum(o.verdict == "unsat" and o.correct == "yes" for o in group),
            "wrong": sum(o.correct == "WRONG" for o in group),
            "median_s": statistics.median(o.seconds for o in solved) if solved else float("nan"),
            "score": sum(o.score for o in group),
        })
    return table


def format_table(table: list[dict]) -> str:
    header = f"{'category':<14} {'inst':>5} {'sat':>4} {'unsat':>5} {'wrong':>5} {'median s':>9} {'score':>6}"
    lines = [header, "-" * len(header)]
    for row in table:
        if row["category"] == "total":
            lines.append("-" * len(header))
        median = "-" if row["median_s"] != row["median_s"] else f"{row['median_s']:.2f}"
        lines.append(f"{row['category']:<14} {row['instances']:>5} {row['sat']:>4} {row['unsat']:>5} "
                     f"{row['wrong']:>5} {median:>9} {row['score']:>6}")
    return "\n".join(lines)


def cactus_plot(outcomes: list[Outcome], path: str | os.PathLike) -> None:
    """Solved instances against time (needs the ``plots`` extra: matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = sorted(o.seconds for o in outcomes if o.correct == "yes")
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.step(range(1, len(times) + 1), times, where="post")
    axes.set_xlabel("instances solved")
    axes.set_ylabel("wall time per instance (s)")
    axes.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
