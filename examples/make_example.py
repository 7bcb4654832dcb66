"""Build the bundled example: a tiny ReLU network and two properties.

    python examples/make_example.py        # rewrites examples/*.onnx, *.vnnlib

The network maps x in R^2 to y in R^2 through two hidden ReLU layers of 8
neurons (seeded random weights).  Both properties use the box [-1, 1]^2 and
the unsafe set ``y_0 - y_1 <= t``:

* ``example_unsat.vnnlib``: ``t`` lies below the true minimum of ``y_0 - y_1``
  over the box, so the property holds, yet interval arithmetic (IBP) cannot
  show it: verifying it needs tighter bounds (or branching).
* ``example_sat.vnnlib``: ``t`` lies between the minimum and the value at the
  box centre, so a counterexample exists but the centre is not one.

The true minimum is certified here by a 1001 x 1001 grid plus a Lipschitz
bound (the product of the layers' spectral norms), and the script asserts
both claims before writing anything.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SIZES = (2, 8, 8, 2)


def make_weights(seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in), rng.normal(size=n_out) * 0.3)
            for n_in, n_out in zip(SIZES[:-1], SIZES[1:])]


def forward(weights, x: np.ndarray) -> np.ndarray:
    """``x: (N, 2)`` -> ``(N, 2)``, float64."""
    for index, (w, b) in enumerate(weights):
        x = x @ w.T + b
        if index < len(weights) - 1:
            x = np.maximum(x, 0.0)
    return x


def interval_lower_bound(weights, lower: np.ndarray, upper: np.ndarray) -> float:
    """IBP lower bound of ``y_0 - y_1`` over the box."""
    for index, (w, b) in enumerate(weights):
        if index == len(weights) - 1:
            w, b = (w[0] - w[1])[None], np.array([b[0] - b[1]])
        centre, radius = (lower + upper) / 2, (upper - lower) / 2
        mid, rad = w @ centre + b, np.abs(w) @ radius
        lower, upper = mid - rad, mid + rad
        if index < len(weights) - 1:
            lower, upper = np.maximum(lower, 0), np.maximum(upper, 0)
    return float(lower[0])


def certified_minimum(weights, points: int = 1001) -> tuple[float, float]:
    """(lower bound, grid value) of ``min y_0 - y_1`` over [-1, 1]^2."""
    axis = np.linspace(-1.0, 1.0, points)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    out = forward(weights, grid)
    grid_min = float((out[:, 0] - out[:, 1]).min())
    lipschitz = np.prod([np.linalg.norm(w, 2) for w, _ in weights[:-1]])
    lipschitz *= np.linalg.norm(weights[-1][0][0] - weights[-1][0][1])
    # every point of the box is within half a diagonal cell of a grid point
    reach = (2.0 / (points - 1)) * np.sqrt(2) / 2
    return grid_min - lipschitz * reach, grid_min


def make_model(weights) -> onnx.ModelProto:
    nodes, inits, previous = [], [], "x"
    for index, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w.T.astype(np.float32), f"W{index}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{index}")]
        nodes += [helper.make_node("MatMul", [previous, f"W{index}"], [f"mm{index}"], name=f"matmul{index}"),
                  helper.make_node("Add", [f"mm{index}", f"B{index}"], [f"z{index}"], name=f"add{index}")]
        previous = f"z{index}"
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"h{index}"], name=f"relu{index}"))
            previous = f"h{index}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "nnverify_example",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, producer_name="nnverify-example", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def property_text(title: str, threshold: float) -> str:
    lines = [f"; {title}", "; unsafe set: y_0 - y_1 <= t on the box [-1, 1]^2", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(2)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(2)] + [""]
    for i in range(2):
        lines += [f"(assert (>= X_{i} -1.0))", f"(assert (<= X_{i} 1.0))"]
    lines += ["", f"(assert (<= (- Y_0 Y_1) {threshold:.6f}))", ""]
    return "\n".join(lines)


def main() -> None:
    weights = make_weights()
    # thresholds are computed from the float32 weights the model really holds
    weights = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for w, b in weights]
    certified, grid_min = certified_minimum(weights)
    centre = forward(weights, np.zeros((1, 2)))[0]
    centre_value = float(centre[0] - centre[1])
    ibp = interval_lower_bound(weights, -np.ones(2), np.ones(2))
    unsat_t = certified - 0.1 * (centre_value - certified)
    sat_t = grid_min + 0.5 * (centre_value - grid_min)
    assert ibp < unsat_t < certified, (ibp, unsat_t, certified)  # holds, and IBP alone cannot show it
    assert grid_min < sat_t < centre_value, (grid_min, sat_t, centre_value)  # violated, not at the centre
    onnx.save(make_model(weights), HERE / "example.onnx")
    (HERE / "example_unsat.vnnlib").write_text(property_text(
        f"holds: min of y_0 - y_1 is >= {certified:.6f} (IBP bound {ibp:.4f})", unsat_t))
    (HERE / "example_sat.vnnlib").write_text(property_text(
        f"violated: y_0 - y_1 reaches {grid_min:.6f}; it is {centre_value:.6f} at the centre", sat_t))
    print(f"min y0-y1 in [{certified:.4f}, {grid_min:.4f}], centre {centre_value:.4f}, IBP {ibp:.4f}; "
          f"t_unsat {unsat_t:.4f}, t_sat {sat_t:.4f}")


if __name__ == "__main__":
    main()
