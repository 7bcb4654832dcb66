"""Sampling check of the bound engine on every dev network it supports.

    python -m benchmarks.soundness_sampling [--points 10000] [--threads 2] [--only SUBSTRING]

For each distinct network of ``instances.csv`` (with the first property file
listed for it) and the first input box of that property, the stacked clause
rows ``C y - d`` are bounded by IBP, CROWN and alpha-CROWN (lower and upper),
and the network is evaluated on ``--points`` points of the box: uniform
samples, random vertices, and points with one coordinate pinned to a face.
A *violation* is a sampled value outside a bound by more than
``1e-4 * (1 + max |value|)`` (float32 evaluation noise).  Every count must be 0.
Networks whose operators the engine cannot bound are listed as skipped.
"""
from __future__ import annotations

import argparse
import csv
import time
import traceback
from pathlib import Path

import torch

from benchmarks.bound_speed import instance
from bounds.engine import BoundConfig, compute_bounds

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
METHODS = ("ibp", "crown", "alpha-crown")


def networks(only: str | None) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    with open(BENCH / "instances.csv") as handle:
        for row in csv.DictReader(handle):
            if only and only not in row["onnx"]:
                continue
            seen.setdefault(row["onnx"], row["vnnlib"])
    return list(seen.items())


def sample_points(lower: torch.Tensor, upper: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``(count, *shape)``: half uniform, a quarter vertices, a quarter on faces."""
    gen = torch.Generator().manual_seed(seed)
    low, up = lower.reshape(-1), upper.reshape(-1)
    t = torch.rand(count, low.numel(), generator=gen, dtype=low.dtype)
    quarter = count // 4
    t[:quarter] = torch.randint(0, 2, (quarter, low.numel()), generator=gen).to(low.dtype)
    pick = torch.randint(0, low.numel(), (quarter,), generator=gen)
    side = torch.randint(0, 2, (quarter,), generator=gen).to(low.dtype)
    t[quarter + torch.arange(quarter), pick] = side
    return (low + (up - low) * t).reshape((count,) + tuple(lower.shape[1:]))


def spec_values(graph, points, spec, offset, chunk: int = 500) -> torch.Tensor:
    values = []
    with torch.no_grad():
        for start in range(0, points.shape[0], chunk):
            out = graph.forward(points[start:start + chunk]).reshape(min(chunk, points.shape[0] - start), -1)
            values.append(out @ spec.T - offset)
    return torch.cat(values)


def check_network(onnx_path: str, vnnlib_path: str, points: int) -> str:
    graph, lower, upper, spec, offset = instance(onnx_path, vnnlib_path)
    values = spec_values(graph, sample_points(lower, upper, points), spec, offset)
    slack = 1e-4 * (1 + values.abs().max().item())
    true_min, true_max = values.min(0).values, values.max(0).values
    parts = []
    for method in METHODS:
        started = time.perf_counter()
        config = BoundConfig(method=method, alpha_iterations=10)
        result = compute_bounds(graph, lower, upper, spec.unsqueeze(0), offset.unsqueeze(0),
                                config=config, want_upper=True)
        bad = int((result.lower[0] > true_min + slack).sum() + (result.upper[0] < true_max - slack).sum())
        gap = (true_min - result.lower[0]).mean().item()
        parts.append(f"{method}: {bad} violations (mean gap {gap:.3g}, {time.perf_counter() - started:.1f}s)")
    return f"{spec.shape[0]} rows; " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="substring of the ONNX path")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for onnx_path, vnnlib_path in networks(args.only):
        started = time.perf_counter()
        try:
            line = check_network(onnx_path, vnnlib_path, args.points)
        except Exception as error:  # report and move on: unsupported ops, etc.
            line = f"SKIPPED ({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})"
            if args.verbose:
                traceback.print_exc()
        print(f"{onnx_path}: {line} [{time.perf_counter() - started:.1f}s]", flush=True)


if __name__ == "__main__":
    main()
