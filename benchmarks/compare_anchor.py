"""Compare a harness result table with the reference verifier's ``anchor_cpu.csv``.

``python -m benchmarks.compare_anchor RESULTS.csv [--anchor ANCHOR.csv]``

Instances are matched by ``(onnx, vnnlib)``; categories come from the results
file.  Per category it prints the instances, how many each side decided
(correct ``sat``/``unsat``), wrong verdicts, median wall times over decided
instances, and on instances both decided the median and worst time ratio
(ours / anchor; below 1 we are faster).  Exit status 1 when we gave a wrong
verdict.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

DEFAULT_ANCHOR = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "anchor_cpu.csv"


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _decided(row: dict) -> bool:
    return row.get("correct") == "yes" and row.get("verdict") in ("sat", "unsat")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def compare(results: list[dict], anchor: list[dict]) -> tuple[list[str], int]:
    """Table lines and the number of wrong verdicts of ours."""
    by_key = {(a["onnx"], a["vnnlib"]): a for a in anchor}
    groups: dict[str, list[tuple[dict, dict | None]]] = defaultdict(list)
    for row in results:
        groups[row.get("category") or row["benchmark"]].append((row, by_key.get((row["onnx"], row["vnnlib"]))))
    header = (f"{'category':<14} {'n':>3} {'ours':>5} {'anchor':>6} {'wrong':>5} {'med ours':>8} "
              f"{'med anch':>8} {'both':>4} {'med ratio':>9} {'max ratio':>9} {'faster':>6}")
    lines, total_wrong = [header, "-" * len(header)], 0
    everything: list[tuple[dict, dict | None]] = []
    for category in sorted(groups) + ["all"]:
        pairs = everything if category == "all" else groups[category]
        if category != "all":
            everything.extend(pairs)
        ours = [r for r, _ in pairs if _decided(r)]
        theirs = [a for _, a in pairs if a is not None and _decided(a)]
        wrong = sum(1 for r, _ in pairs if r.get("correct") == "WRONG")
        both = [(float(r["seconds"]), float(a["seconds"])) for r, a in pairs
                if a is not None and _decided(r) and _decided(a)]
        ratios = [o / max(t, 1e-9) for o, t in both]
        faster = sum(1 for o, t in both if o < t)
        lines.append(f"{category:<14} {len(pairs):>3} {len(ours):>5} {len(theirs):>6} {wrong:>5} "
                     f"{_median([float(r['seconds']) for r in ours]):>8} "
                     f"{_median([float(a['seconds']) for a in theirs]):>8} {len(both):>4} "
                     f"{_median(ratios) if ratios else '-':>9} "
                     f"{(f'{max(ratios):.2f}' if ratios else '-'):>9} {faster:>6}")
        if category != "all":
            total_wrong += wrong
    return lines, total_wrong


def per_instance(results: list[dict], anchor: list[dict]) -> list[str]:
    by_key = {(a["onnx"], a["vnnlib"]): a for a in anchor}
    lines = []
    for row in results:
        a = by_key.get((row["onnx"], row["vnnlib"]))
        theirs = f"{a['verdict']:>7} {float(a['seconds']):7.2f}s" if a else "      -         -"
        lines.append(f"{row['verdict']:>7} {float(row['seconds']):7.2f}s | {theirs}  "
                     f"{row['benchmark']} {Path(row['onnx']).name} {Path(row['vnnlib']).name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_anchor", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="CSV written by `python -m benchmarks run ... --out`")
    parser.add_argument("--anchor", default=str(DEFAULT_ANCHOR), help="reference results (anchor_cpu.csv)")
    parser.add_argument("--instances", action="store_true", help="also print one line per instance")
    args = parser.parse_args(argv)
    results, anchor = _read(Path(args.results)), _read(Path(args.anchor))
    if args.instances:
        print("   ours            | anchor")
        print("\n".join(per_instance(results, anchor)))
        print()
    lines, wrong = compare(results, anchor)
    print("\n".join(lines))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
