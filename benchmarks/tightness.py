"""Tightness of CROWN and alpha-CROWN against the triangle-relaxation LP.

With the intermediate bounds fixed to CROWN's, the three spec bounds must
satisfy ``CROWN <= alpha-CROWN <= LP + 1e-4`` on every row (the LP is the
optimum of the same relaxation).  Prints, per network, the mean fraction of
the CROWN -> LP gap that alpha-CROWN closes.

    PYTHONPATH=. python benchmarks/tightness.py [--boxes 8] [--iterations 100]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bounds.engine import BoundConfig, compute_bounds
from bounds.lp import lp_bounds
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib

#: Seconds per LP row; HiGHS occasionally stalls on degenerate mnist LPs.
LP_TIME_LIMIT = 20.0
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
CASES = {
    # name: (onnx, vnnlib, relative sub-box width, label/reference output)
    "acasxu_1_1": ("2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "2022_acasxu/vnnlib/prop_3.vnnlib", 0.15, 0),
    "mnist_256x2": ("2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_9_0.05.vnnlib", 0.35, None),
}


def _spec_rows(num_outputs: int, reference: int) -> torch.Tensor:
    """Rows ``y_ref - y_j`` for every ``j != ref``."""
    rows = []
    for j in range(num_outputs):
        if j != reference:
            row = torch.zeros(num_outputs)
            row[reference], row[j] = 1.0, -1.0
            rows.append(row)
    return torch.stack(rows)


def measure(name: str, boxes: int, iterations: int, seed: int = 0) -> dict:
    onnx_path, vnnlib_path, width, reference = CASES[name]
    graph = load_onnx(SHARED / onnx_path)
    spec = parse_vnnlib(SHARED / vnnlib_path)
    box = spec.properties[0].box
    shape = (1,) + tuple(graph.input_shape)
    lower_full = torch.tensor(box.lower, dtype=torch.float32).reshape(shape)
    upper_full = torch.tensor(box.upper, dtype=torch.float32).reshape(shape)
    if reference is None:  # robustness property: the label is the row's positive entry
        reference = int(np.argmax(spec.properties[0].clauses[0].matrix[0] < 0))
    spec_matrix = _spec_rows(graph.output_numel, reference).unsqueeze(0)
    relu_inputs = [n.inputs[0] for n in graph.nodes if n.op.op_type == "Relu"]
    generator = torch.Generator().manual_seed(seed)
    fractions, violations, rows_seen, lp_stopped = [], 0, 0, 0
    started = time.perf_counter()
    for _ in range(boxes):
        span = (upper_full - lower_full) * width
        corner = lower_full + torch.rand(shape, generator=generator) * (upper_full - lower_full - span)
        lower, upper = corner, corner + span
        crown = compute_bounds(graph, lower, upper, spec_matrix, config=BoundConfig(method="crown"))
        fixed = {k: crown.intermediate[k] for k in relu_inputs}
        alpha = compute_bounds(graph, lower, upper, spec_matrix, intermediate=fixed,
                               config=BoundConfig(method="alpha-crown", alpha_iterations=iterations,
                                                  optimize_intermediate=False))
        lp = lp_bounds(graph, lower, upper, spec_matrix[0].numpy(), fixed, time_limit=LP_TIME_LIMIT)
        c, a = crown.lower[0].double().numpy(), alpha.lower[0].double().numpy()
        for row in range(len(lp)):
            if lp[row] < c[row] - 1e-6:  # the LP stopped at its time limit: not an optimum, skip the row
                lp_stopped += 1
                continue
            rows_seen += 1
            if not (c[row] <= a[row] + 1e-6 and a[row] <= lp[row] + 1e-4):
                violations += 1
            gap = lp[row] - c[row]
            if gap > 1e-5:
                fractions.append(min(max((a[row] - c[row]) / gap, 0.0), 1.0))
    return {"net": name, "rows": rows_seen, "lp_stopped": lp_stopped, "order_violations": violations,
            "rows_with_gap": len(fractions), "mean_gap_closed": float(np.mean(fractions)) if fractions else float("nan"),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in CASES:
        r = measure(name, args.boxes, args.iterations)
        print(f"{r['net']:>12}: rows {r['rows']} (LP stopped early on {r['lp_stopped']}), CROWN<=alpha<=LP+1e-4 violated on {r['order_violations']}, "
              f"mean CROWN->LP gap closed by alpha {100 * r['mean_gap_closed']:.1f}% over {r['rows_with_gap']} rows "
              f"({r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
