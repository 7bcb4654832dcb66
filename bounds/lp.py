"""LP/MIP oracle for piecewise-linear graphs (linear ops + ReLU).

LP: the triangle ("Planet") relaxation of every ReLU ``y = max(z, 0)`` with
pre-activation bounds ``l <= z <= u``:

* ``u <= 0``: ``y = 0``;   ``l >= 0``: ``y = z``;
* ``l < 0 < u``: ``y >= 0``, ``y >= z``, ``y <= u (z - l) / (u - l)``.

MIP: the exact big-M encoding of unstable neurons with an indicator
``a in {0, 1}``: ``y >= z``, ``y >= 0``, ``y <= z - l (1 - a)``, ``y <= u a``.
It is exact only because ``l``/``u`` are valid bounds, so big-M always comes
from sound bounds: closed-form interval bounds over the affine forms, or LP
bounds certified from the LP duals (see :mod:`bounds.lp_model`).

Columns: the input box, and for each ReLU its pre-activations ``z`` (tied to
their affine expression by equality rows) and outputs ``y``.  One solver
instance is re-solved per objective, so each solve warm-starts from the last
basis.  Every LP value returned is the rigorous dual bound, not the solver's
floating objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import scipy.sparse as sp
import torch

from bounds.graph import Graph
from bounds.lp_encode import (IDENTITY, AffineExpr, PiecewiseLinearNet, UnsupportedForLP, encode_graph,
                              expression_bounds, widen)
from bounds.lp_model import INF, LinearProgram, Solution, gurobi_available

__all__ = ["lp_bounds", "lp_intermediate_bounds", "interval_intermediate_bounds", "mip_minimize",
           "mip_minimum", "mip_verdict", "MipResult", "UnsupportedForLP", "gurobi_available"]

ArrayLike = torch.Tensor | np.ndarray
BoundsDict = Mapping[str, tuple[ArrayLike, ArrayLike]]


def _flat64(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


@dataclass
class _Relaxation:
    """The LP of a net over an input box, plus where every block lives."""

    net: PiecewiseLinearNet
    program: LinearProgram
    columns: dict[str, int] = field(default_factory=dict)          # block -> first column
    block_bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pre_bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pre_columns: dict[str, int] = field(default_factory=dict)      # pre-activation node -> first z column

    def expression_matrix(self, expr: AffineExpr, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """Sparse ``(n, num_cols)`` coefficient matrix of ``expr`` (or of ``rows @ expr``)."""
        parts_r, parts_c, parts_v = [], [], []
        n = expr.size if rows is None else rows.shape[0]
        for block, term in expr.terms.items():
            if rows is None and term is IDENTITY:
                r = np.arange(expr.size)
                parts_r.append(r), parts_c.append(r + self.columns[block]), parts_v.append(np.ones(expr.size))
                continue
            dense = expr.dense_term(block) if rows is None else rows @ expr.dense_term(block)
            r, c = np.nonzero(dense)
            parts_r.append(r), parts_c.append(c + self.columns[block]), parts_v.append(dense[r, c])
        if not parts_r:
            return sp.csr_matrix((n, self.program.num_cols))
        return sp.csr_matrix((np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))),
                             shape=(n, self.program.num_cols))

    def minimize_output(self, spec_rows: np.ndarray, time_limit: float | None = None) -> np.ndarray:
        """Safe LP lower bound of ``spec_rows[s] @ output`` for every row."""
        costs = self.expression_matrix(self.net.output, spec_rows).toarray()
        offsets = spec_rows @ self.net.output.bias
        return np.array([self.program.minimize(costs[s], offsets[s], time_limit=time_limit).bound
                         for s in range(len(spec_rows))])


def _add_pre_activation(relax: _Relaxation, name: str, lower: np.ndarray, upper: np.ndarray) -> int:
    """Columns ``z`` in ``[lower, upper]`` with rows ``z - expr = bias``."""
    expr = relax.net.pre_activations[name]
    start = relax.program.add_columns(lower, upper)
    matrix = -relax.expression_matrix(expr) + sp.csr_matrix(
        (np.ones(expr.size), (np.arange(expr.size), start + np.arange(expr.size))),
        shape=(expr.size, relax.program.num_cols))
    relax.program.add_rows(matrix, expr.bias, expr.bias)
    relax.pre_columns[name] = start
    return start


def _refine_by_lp(relax: _Relaxation, start: int, lower: np.ndarray, upper: np.ndarray,
                  refine_stable: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tighten bounds of columns ``start..`` by minimizing and maximizing each."""
    lower, upper = lower.copy(), upper.copy()
    cost = np.zeros(relax.program.num_cols)
    for j in range(len(lower)):
        if not refine_stable and (lower[j] >= 0 or upper[j] <= 0):
            continue
        cost[start + j] = -1.0
        upper[j] = min(upper[j], -relax.program.minimize(cost).bound)
        if refine_stable or upper[j] > 0:
            cost[start + j] = 1.0
            lower[j] = max(lower[j], relax.program.minimize(cost).bound)
        cost[start + j] = 0.0
    lower, upper = widen(lower, upper)
    relax.program.set_column_bounds(start, lower, upper)
    return lower, upper


def _add_relu(relax: _Relaxation, name: str, lower: np.ndarray, upper: np.ndarray, z_start: int) -> None:
    """Columns ``y`` of one ReLU and its triangle-relaxation rows."""
    program = relax.program
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    y_lower = np.where(active, lower, 0.0)
    y_upper = np.where(inactive, 0.0, upper)
    y_start = program.add_columns(y_lower, y_upper)
    relax.columns[name] = y_start
    relax.block_bounds[name] = (y_lower, y_upper)
    n_cols = program.num_cols

    def rows(index: np.ndarray, z_coef: np.ndarray) -> sp.csr_matrix:
        k = len(index)
        r = np.repeat(np.arange(k), 2)
        c = np.stack([y_start + index, z_start + index], 1).reshape(-1)
        v = np.stack([np.ones(k), z_coef], 1).reshape(-1)
        return sp.csr_matrix((v, (r, c)), shape=(k, n_cols))

    on = np.flatnonzero(active)
    program.add_rows(rows(on, -np.ones(len(on))), 0.0, 0.0)                       # y = z
    loose = np.flatnonzero(unstable)
    program.add_rows(rows(loose, -np.ones(len(loose))), 0.0, INF)                  # y >= z
    slope = upper[loose] / (upper[loose] - lower[loose])
    program.add_rows(rows(loose, -slope), -INF, -slope * lower[loose])            # y <= slope (z - l)


def _relaxation(net: PiecewiseLinearNet, input_lower: ArrayLike, input_upper: ArrayLike,
                intermediate: BoundsDict | None, solver: str, refine_stable: bool) -> _Relaxation:
    """Build the triangle LP, computing missing intermediate bounds layer by layer."""
    relax = _Relaxation(net, LinearProgram(solver))
    lower, upper = _flat64(input_lower), _flat64(input_upper)
    relax.columns[net.input_name] = relax.program.add_columns(lower, upper)
    relax.block_bounds[net.input_name] = (lower, upper)
    given = intermediate or {}
    for unit in net.relus:
        name = unit.input_name
        if name not in relax.pre_bounds:
            expr = net.pre_activations[name]
            if name in given:
                lower, upper = (_flat64(t) for t in given[name])
                start = _add_pre_activation(relax, name, lower, upper)
            else:
                # Closed form is the exact LP optimum when only the input box is involved.
                lower, upper = widen(*expression_bounds(expr, relax.block_bounds))
                start = _add_pre_activation(relax, name, lower, upper)
                if set(expr.terms) != {net.input_name}:
                    lower, upper = _refine_by_lp(relax, start, lower, upper, refine_stable)
            relax.pre_bounds[name] = (lower, upper)
        lower, upper = relax.pre_bounds[name]
        _add_relu(relax, unit.name, lower, upper, relax.pre_columns[name])
    return relax


def _outward_tensor(lower: np.ndarray, upper: np.ndarray, shape, like: torch.Tensor | None):
    """Cast float64 bounds to ``like``'s dtype/device, rounding outwards."""
    dtype = like.dtype if isinstance(like, torch.Tensor) and like.is_floating_point() else torch.float64
    device = like.device if isinstance(like, torch.Tensor) else "cpu"
    lo64, hi64 = torch.from_numpy(lower), torch.from_numpy(upper)
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    lo = torch.where(lo.double() > lo64, torch.nextafter(lo, torch.full_like(lo, -INF)), lo)
    hi = torch.where(hi.double() < hi64, torch.nextafter(hi, torch.full_like(hi, INF)), hi)
    return lo.reshape(1, *shape).to(device), hi.reshape(1, *shape).to(device)


# ---------------------------------------------------------------------------- LP API
def lp_intermediate_bounds(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, *,
                           solver: str = "highs", refine_stable: bool = True
                           ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds of every ReLU by LP, layer by layer.

    Keyed by the ReLU's input node name; tensors ``(1, *shape)`` in the dtype
    and device of ``input_lower`` (rounded outwards).  With
    ``refine_stable=False`` neurons already proven stable by interval bounds
    keep them (this never changes later LP bounds: their exact value is implied
    by the LP constraints anyway).
    """
    net = encode_graph(graph)
    relax = _relaxation(net, input_lower, input_upper, None, solver, refine_stable)
    return {name: _outward_tensor(lo, hi, net.pre_activation_shapes[name], input_lower)
            for name, (lo, hi) in relax.pre_bounds.items()}


def interval_intermediate_bounds(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike
                                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds by interval arithmetic over the collapsed affine forms."""
    net = encode_graph(graph)
    block_bounds = {net.input_name: (_flat64(input_lower), _flat64(input_upper))}
    result = {}
    for unit in net.relus:
        if unit.input_name not in result:
            result[unit.input_name] = widen(*expression_bounds(net.pre_activations[unit.input_name], block_bounds))
        lo, hi = result[unit.input_name]
        block_bounds[unit.name] = (np.maximum(lo, 0.0), np.maximum(hi, 0.0))
    return {name: _outward_tensor(lo, hi, net.pre_activation_shapes[name], input_lower)
            for name, (lo, hi) in result.items()}


def lp_bounds(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, spec_matrix: ArrayLike,
              intermediate: BoundsDict | None = None, *, solver: str = "highs",
              time_limit: float | None = None) -> np.ndarray:
    """Minimum of ``spec_matrix[s] @ output`` over the triangle relaxation, per row ``s``.

    ``time_limit`` (seconds per row): a row whose solve stops at the limit
    still gets a rigorous bound (from the multipliers at the stop), only looser.

    ``intermediate`` maps a ReLU's input node name to ``(lower, upper)``
    ``(1, *shape)``; missing entries (all, when ``None``) are computed by LP
    layer by layer.  Returns float64 ``(S,)`` rigorous lower bounds.
    """
    net = encode_graph(graph)
    relax = _relaxation(net, input_lower, input_upper, intermediate, solver, refine_stable=False)
    spec = _flat64(spec_matrix).reshape(-1, net.output.size)
    return relax.minimize_output(spec, time_limit)


# --------------------------------------------------------------------------- MIP API
@dataclass
class MipResult:
    """``status``: "optimal" | "infeasible" | "time_limit" | "target" | "other";
    ``value``: incumbent objective; ``lower_bound``: proven lower bound;
    ``witness``: incumbent input ``(1, *input_shape)`` (clipped to the box) and
    ``witness_value``: its objective re-evaluated by a float64 forward pass."""

    status: str
    value: float
    lower_bound: float
    witness: torch.Tensor | None
    witness_value: float | None


def _mip(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, intermediate: BoundsDict | None,
         bounds: str, solver: str) -> _Relaxation:
    """Triangle LP plus indicator columns and big-M rows for every unstable ReLU."""
    net = encode_graph(graph)
    if intermediate is None and bounds == "interval":
        intermediate = interval_intermediate_bounds(graph, input_lower, input_upper)
    elif intermediate is None and bounds != "lp":
        raise ValueError(f"bounds must be 'lp' or 'interval', got {bounds!r}")
    relax = _relaxation(net, input_lower, input_upper, intermediate, solver, refine_stable=False)
    program = relax.program
    for unit in net.relus:
        lower, upper = relax.pre_bounds[unit.input_name]
        loose = np.flatnonzero((lower < 0) & (upper > 0))
        k = len(loose)
        if k == 0:
            continue
        a_start = program.add_columns(np.zeros(k), np.ones(k), integer=True)
        y_cols = relax.columns[unit.name] + loose
        z_cols = relax.pre_columns[unit.input_name] + loose
        a_cols = a_start + np.arange(k)
        r = np.arange(k)
        n_cols = program.num_cols
        # y - z - l a <= -l
        program.add_rows(sp.csr_matrix((np.concatenate([np.ones(k), -np.ones(k), -lower[loose]]),
                                        (np.tile(r, 3), np.concatenate([y_cols, z_cols, a_cols]))),
                                       shape=(k, n_cols)), -INF, -lower[loose])
        # y - u a <= 0
        program.add_rows(sp.csr_matrix((np.concatenate([np.ones(k), -upper[loose]]),
                                        (np.tile(r, 2), np.concatenate([y_cols, a_cols]))),
                                       shape=(k, n_cols)), -INF, 0.0)
    return relax


def _witness(relax: _Relaxation, solution: Solution, input_lower: ArrayLike, input_upper: ArrayLike):
    """The input part of a MIP solution, clipped to the box, as ``(1, *shape)`` float64."""
    if solution.x is None:
        return None
    start = relax.columns[relax.net.input_name]
    x = solution.x[start:start + relax.net.input_size]
    x = np.clip(x, _flat64(input_lower), _flat64(input_upper))
    return torch.from_numpy(x).reshape(1, *relax.net.input_shape)


def mip_minimize(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, spec_vector: ArrayLike, *,
                 intermediate: BoundsDict | None = None, bounds: str = "lp", time_limit: float | None = None,
                 solver: str = "highs") -> MipResult:
    """Exact minimum of ``spec_vector @ output`` over the box by MIP (big-M).

    Big-M comes from ``intermediate`` when given (it must be sound), else from
    LP (``bounds="lp"``) or interval (``bounds="interval"``) bounds.
    """
    relax = _mip(graph, input_lower, input_upper, intermediate, bounds, solver)
    spec = _flat64(spec_vector).reshape(1, -1)
    cost = relax.expression_matrix(relax.net.output, spec).toarray()[0]
    solution = relax.program.solve_mip(cost, float(spec[0] @ relax.net.output.bias), time_limit=time_limit)
    witness = _witness(relax, solution, input_lower, input_upper)
    witness_value = None
    if witness is not None:
        witness_value = float(relax.net.forward(witness.numpy())["__output__"][0] @ spec[0])
    return MipResult(solution.status, solution.value, solution.bound, witness, witness_value)


def mip_minimum(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, spec_vector: ArrayLike,
                **kwargs) -> float:
    """Exact minimum of ``spec_vector @ output`` over the box (see :func:`mip_minimize`).

    Raises ``RuntimeError`` when the MIP is not solved to optimality.
    """
    result = mip_minimize(graph, input_lower, input_upper, spec_vector, **kwargs)
    if result.status != "optimal":
        raise RuntimeError(f"MIP not solved to optimality (status {result.status})")
    return result.value


def mip_verdict(graph: Graph, input_lower: ArrayLike, input_upper: ArrayLike, clause_matrix: ArrayLike,
                clause_offset: ArrayLike, time_limit: float | None = None, *,
                intermediate: BoundsDict | None = None, bounds: str = "lp", solver: str = "highs",
                witness_tolerance: float = 0.0, target_margin: float = 1e-6
                ) -> tuple[str, torch.Tensor | None]:
    """Is there an input in the box with ``C y <= d`` (all rows)?

    Minimizes the worst row ``t = max_j (C_j y - d_j)`` subject to ``t <= 0``:
    infeasible means ``"unsat"``; a solution is ``"sat"`` only after a float64
    forward pass of its input confirms ``max_j (C_j y - d_j) <= witness_tolerance``
    (the solver stops at the first solution with ``t <= -target_margin``, and
    re-solves to optimality when that one does not check out).  Returns
    ``(verdict, witness)`` with ``witness`` ``(1, *input_shape)`` float64 when sat.
    """
    relax = _mip(graph, input_lower, input_upper, intermediate, bounds, solver)
    program = relax.program
    clause = _flat64(clause_matrix).reshape(-1, relax.net.output.size)
    offset = _flat64(clause_offset)
    t_col = program.add_columns(np.array([-INF]), np.array([0.0]))
    rows = relax.expression_matrix(relax.net.output, clause).tolil()
    rows[:, t_col] = -1.0
    program.add_rows(rows.tocsr(), -INF, offset - clause @ relax.net.output.bias)     # C y - t <= d
    cost = np.zeros(program.num_cols)
    cost[t_col] = 1.0
    for target in (-target_margin, -INF):
        solution = program.solve_mip(cost, time_limit=time_limit, target=target)
        if solution.status == "infeasible":
            return "unsat", None
        witness = _witness(relax, solution, input_lower, input_upper)
        if witness is not None:
            output = relax.net.forward(witness.numpy())["__output__"][0]
            if np.max(clause @ output - offset) <= witness_tolerance:
                return "sat", witness
        if solution.status != "target":
            break
    return "unknown", None
