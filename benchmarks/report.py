"""Benchmark reports: VNN-COMP score, markdown table and cactus plot.

Scoring (VNN-COMP 2022-2024 rules): a correct ``sat``/``unsat`` earns +10, a
wrong one -150, anything else 0; an instance whose expected verdict is
``unknown`` scores 0 whatever we answer (no ground truth).  Ties are broken by
total wall time of the solved instances, reported next to the score.

``python -m benchmarks.report results.csv --out DIR`` rebuilds ``report.md``
and ``cactus.png`` from a harness ``results.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from dataclasses import fields, replace
from pathlib import Path

from benchmarks.harness import Outcome, judge, summarize, write_csv


def read_results(path: str | os.PathLike) -> list[Outcome]:
    """Outcomes from a ``results.csv`` written by the harness."""
    types = {f.name: f.type for f in fields(Outcome)}
    outcomes = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {}
            for name, kind in types.items():
                text = row.get(name, "")
                values[name] = float(text) if kind in ("float", float) else int(text) if kind in ("int", int) else text
            outcomes.append(Outcome(**values))
    return outcomes


def judged(outcomes: list[Outcome]) -> list[Outcome]:
    """Copies with ``correct``/``score`` recomputed from ``expected`` and ``verdict``."""
    result = []
    for o in outcomes:
        correct, score = judge(o.expected, o.verdict)
        result.append(replace(o, correct=correct, score=score))
    return result


def vnncomp_score(outcomes: list[Outcome]) -> dict:
    """``{"score", "correct", "wrong", "solved_time"}``, re-judged from expected/verdict."""
    score = correct = wrong = 0
    solved_time = 0.0
    for o in outcomes:
        verdict, points = judge(o.expected, o.verdict)
        score += points
        correct += verdict == "yes"
        wrong += verdict == "WRONG"
        if verdict == "yes":
            solved_time += o.seconds
    return {"score": score, "correct": correct, "wrong": wrong, "solved_time": round(solved_time, 2),
            "instances": len(outcomes), "max_score": 10 * sum(o.expected in ("sat", "unsat") for o in outcomes)}


def markdown_table(outcomes: list[Outcome]) -> str:
    """Per-category rows (instances, solved sat/unsat, wrong, median time, score) and a total."""
    lines = ["| category | instances | sat | unsat | wrong | undecided | median s (solved) | score |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summarize(judged(outcomes)):
        undecided = row["instances"] - row["sat"] - row["unsat"] - row["wrong"]
        median = "-" if row["median_s"] != row["median_s"] else f"{row['median_s']:.2f}"
        name = f"**{row['category']}**" if row["category"] == "total" else row["category"]
        lines.append(f"| {name} | {row['instances']} | {row['sat']} | {row['unsat']} | {row['wrong']} | "
                     f"{undecided} | {median} | {row['score']} |")
    score = vnncomp_score(outcomes)
    lines.append("")
    lines.append(f"VNN-COMP score {score['score']} of {score['max_score']} ({score['correct']} correct, "
                 f"{score['wrong']} wrong), {score['solved_time']} s on solved instances.")
    return "\n".join(lines)


def cactus_plot(outcomes: list[Outcome], path: str | os.PathLike, title: str = "") -> None:
    """Cumulative solved instances against per-instance wall time: one line in
    total and one per category (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[float]] = {"all": []}
    for o in outcomes:
        if judge(o.expected, o.verdict)[0] == "yes":
            groups["all"].append(o.seconds)
            groups.setdefault(o.category, []).append(o.seconds)
    for name, times in groups.items():
        times = sorted(times)
        if times:
            axes.step(times, range(1, len(times) + 1), where="post", label=f"{name} ({len(times)})",
                      linewidth=2.0 if name == "all" else 1.0)
    axes.set_xlabel("wall time per instance (s)")
    axes.set_ylabel("instances solved")
    axes.set_xscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(outcomes: list[Outcome], folder: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """``results.csv``, ``report.md`` and ``cactus.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv", "markdown": folder / "report.md", "plot": folder / "cactus.png"}
    write_csv(outcomes, paths["csv"])
    times = [o.seconds for o in outcomes]
    header = f"# {title or 'Benchmark report'}\n\n{len(outcomes)} instances, total wall time " \
             f"{sum(times):.1f} s, median {statistics.median(times) if times else 0:.2f} s.\n\n"
    paths["markdown"].write_text(header + markdown_table(outcomes) + "\n")
    cactus_plot(outcomes, paths["plot"], title)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.csv written by python -m benchmarks run --out")
    parser.add_argument("--out", required=True, help="folder for report.md, cactus.png (and results.csv)")
    parser.add_argument("--title", default="", help="title of the report and plot")
    args = parser.parse_args(argv)
    outcomes = read_results(args.results)
    paths = write_report(outcomes, args.out, args.title)
    print(markdown_table(outcomes))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
