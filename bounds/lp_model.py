"""A growable sparse LP/MIP with a rigorous dual bound, and its solvers.

The problem is

    minimize  c^T x   s.t.  row_lower <= A x <= row_upper,
                            col_lower <= x <= col_upper,  x_j integer for j in I.

Columns and rows are added in blocks (numpy arrays / scipy CSR matrices, one
solver call per block).  After an LP solve, :meth:`LinearProgram.minimize`
does not trust the solver's objective: it recomputes a *safe* lower bound from
the row duals.  For any multipliers ``lambda`` (signs fixed to match the
finite side of each row),

    c^T x = lambda^T (A x) + (c - A^T lambda)^T x
         >= sum_i min_{r_i in [rl_i, ru_i]} lambda_i r_i
            + sum_j min_{x_j in [cl_j, cu_j]} d_j x_j ,   d = c - A^T lambda,

so the value is a valid bound whatever the solver's tolerances did (and equals
the optimum when the duals are optimal).  HiGHS and Gurobi share the sign
convention ``reduced_cost = c - A^T row_dual``.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

INF = float("inf")


@dataclass
class Solution:
    """Outcome of one solve: ``status`` in {"optimal", "infeasible", "time_limit",
    "target", "other"}; ``value`` the solver's objective; ``bound`` a proven
    lower bound (LP: from duals; MIP: the solver's dual bound); ``x`` primal
    values or ``None``."""

    status: str
    value: float
    bound: float
    x: np.ndarray | None


@functools.lru_cache(maxsize=1)
def gurobi_available() -> bool:
    """True when gurobipy imports and a licensed environment can be created."""
    try:
        import gurobipy
        env = gurobipy.Env(params={"OutputFlag": 0})
        env.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


@functools.lru_cache(maxsize=1)
def _highs_banner_silenced() -> bool:
    """Create the process's first ``Highs`` with file descriptor 1 on
    /dev/null: HiGHS prints a two-line banner to stdout on its first
    construction, before ``output_flag`` can be set, and the command line's
    stdout carries only the verdict line."""
    import highspy

    try:
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no usable stdout (closed, detached): nothing to protect
        return False
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    return True


class _HighsBackend:
    """HiGHS through highspy's array API (one call per block of columns/rows)."""

    def __init__(self, threads: int = 1):
        import highspy
        _highs_banner_silenced()
        self._hs = highspy
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("threads", threads)
        self.num_cols = 0

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, integer: bool) -> None:
        n = len(lower)
        self.h.addVars(n, lower, upper)
        if integer:
            idx = np.arange(self.num_cols, self.num_cols + n, dtype=np.int32)
            types = np.full(n, self._hs.HighsVarType.kInteger)
            self.h.changeColsIntegrality(n, idx, types)
        self.num_cols += n

    def add_rows(self, matrix: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        self.h.addRows(matrix.shape[0], lower, upper, matrix.nnz, matrix.indptr[:-1].astype(np.int32),
                       matrix.indices.astype(np.int32), matrix.data)

    def set_column_bounds(self, index: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        self.h.changeColsBounds(len(index), index.astype(np.int32), lower, upper)

    def set_cost(self, cost: np.ndarray) -> None:
        self.h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)

    def solve(self, *, time_limit: float | None, mip_options: dict | None) -> tuple[Solution, np.ndarray | None]:
        h, ms = self.h, self._hs.HighsModelStatus
        # HiGHS compares time_limit with the object's accumulated run time: make it per solve
        h.setOptionValue("time_limit", h.getRunTime() + float(time_limit) if time_limit else INF)
        for key, value in (mip_options or {}).items():
            h.setOptionValue(key, value)
        h.run()
        model_status = h.getModelStatus()
        status = {ms.kOptimal: "optimal", ms.kInfeasible: "infeasible", ms.kTimeLimit: "time_limit",
                  ms.kObjectiveTarget: "target"}.get(model_status, "other")
        info = h.getInfo()
        sol = h.getSolution()
        x = np.array(sol.col_value) if sol.value_valid else None
        duals = np.array(sol.row_dual) if sol.dual_valid else None
        bound = info.mip_dual_bound if mip_options is not None else -INF
        if status == "infeasible":
            bound = INF
        return Solution(status, info.objective_function_value, bound, x), duals


class _GurobiBackend:  # pragma: no cover - needs a Gurobi licence
    """Gurobi through gurobipy's matrix API.  Rows must be one-sided or equalities."""

    def __init__(self, threads: int = 1):
        import gurobipy
        self._gp = gurobipy
        self.env = gurobipy.Env(params={"OutputFlag": 0, "Threads": threads})
        self.model = gurobipy.Model(env=self.env)
        self.vars: list = []
        self.constrs: list = []

    def add_columns(self, lower, upper, integer):
        vtype = self._gp.GRB.INTEGER if integer else self._gp.GRB.CONTINUOUS
        self.vars.extend(self.model.addMVar(len(lower), lb=lower, ub=upper, vtype=vtype).tolist())

    def add_rows(self, matrix, lower, upper):
        x = self._gp.MVar.fromlist(self.vars)
        if np.any((lower != upper) & np.isfinite(lower) & np.isfinite(upper)):
            raise ValueError("gurobi backend: two-sided rows are not supported")
        sense = np.where(lower == upper, "=", np.where(np.isfinite(lower), ">", "<"))
        rhs = np.where(np.isfinite(lower), lower, upper)
        self.constrs.extend(self.model.addMConstr(matrix, x, sense, rhs).tolist())

    def set_column_bounds(self, index, lower, upper):
        for j, lo, hi in zip(index, lower, upper):
            self.vars[j].LB, self.vars[j].UB = lo, hi

    def set_cost(self, cost):
        self.model.setObjective(self._gp.MVar.fromlist(self.vars) @ cost)

    def solve(self, *, time_limit, mip_options):
        grb = self._gp.GRB
        self.model.Params.TimeLimit = float(time_limit) if time_limit else grb.INFINITY
        if mip_options is not None:
            self.model.Params.MIPGap = mip_options.get("mip_rel_gap", 1e-4)
            self.model.Params.MIPGapAbs = mip_options.get("mip_abs_gap", 1e-6)
            if np.isfinite(mip_options.get("objective_target", -INF)):
                self.model.Params.BestObjStop = mip_options["objective_target"]
        self.model.optimize()
        code = self.model.Status
        status = {grb.OPTIMAL: "optimal", grb.INFEASIBLE: "infeasible", grb.TIME_LIMIT: "time_limit",
                  grb.USER_OBJ_LIMIT: "target"}.get(code, "other")
        has_x = self.model.SolCount > 0
        x = np.array(self.model.getAttr("X", self.vars)) if has_x else None
        value = self.model.ObjVal if has_x else INF
        if mip_options is not None:
            bound = INF if status == "infeasible" else self.model.ObjBound
            return Solution(status, value, bound, x), None
        duals = np.array(self.model.getAttr("Pi", self.constrs)) if status == "optimal" and self.constrs else None
        return Solution(status, value, -INF, x), duals


class LinearProgram:
    """A growable LP/MIP (see module docstring) bound to one solver instance.

    The solver keeps its basis between solves, so re-solving with a new
    objective (:meth:`minimize`) warm-starts.
    """

    def __init__(self, solver: str = "highs", threads: int = 1):
        if solver == "highs":
            self.backend = _HighsBackend(threads)
        elif solver == "gurobi":
            if not gurobi_available():
                raise RuntimeError("solver='gurobi' needs gurobipy with a valid licence; use solver='highs'")
            self.backend = _GurobiBackend(threads)  # pragma: no cover
        else:
            raise ValueError(f"unknown LP solver {solver!r}; expected 'highs' or 'gurobi'")
        self.col_lower = np.zeros(0)
        self.col_upper = np.zeros(0)
        self.has_integers = False
        self._row_blocks: list[sp.csr_matrix] = []
        self._row_lower: list[np.ndarray] = []
        self._row_upper: list[np.ndarray] = []

    @property
    def num_cols(self) -> int:
        return len(self.col_lower)

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, *, integer: bool = False) -> int:
        """Append columns; returns the index of the first new one."""
        start = self.num_cols
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        if len(lower):
            self.backend.add_columns(lower, upper, integer)
        self.col_lower = np.concatenate([self.col_lower, lower])
        self.col_upper = np.concatenate([self.col_upper, upper])
        self.has_integers |= integer and len(lower) > 0
        return start

    def add_rows(self, matrix: sp.spmatrix, lower: np.ndarray, upper: np.ndarray) -> None:
        """Append rows ``lower <= matrix @ x <= upper`` (matrix: (k, num_cols))."""
        matrix = sp.csr_matrix(matrix, dtype=np.float64)
        if matrix.shape[0] == 0:
            return
        matrix.sum_duplicates()
        lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (matrix.shape[0],)).copy()
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (matrix.shape[0],)).copy()
        self.backend.add_rows(matrix, lower, upper)
        self._row_blocks.append(matrix)
        self._row_lower.append(lower)
        self._row_upper.append(upper)

    def set_column_bounds(self, start: int, lower: np.ndarray, upper: np.ndarray) -> None:
        index = np.arange(start, start + len(lower))
        self.col_lower[index] = lower
        self.col_upper[index] = upper
        self.backend.set_column_bounds(index, np.asarray(lower, dtype=np.float64),
                                       np.asarray(upper, dtype=np.float64))

    # --------------------------------------------------------------- solving
    def minimize(self, cost: np.ndarray, offset: float = 0.0, *, time_limit: float | None = None) -> Solution:
        """LP minimum of ``cost @ x + offset``; ``Solution.bound`` is rigorous."""
        cost = np.asarray(cost, dtype=np.float64)
        self.backend.set_cost(cost)
        solution, duals = self.backend.solve(time_limit=time_limit, mip_options=None)
        solution.value += offset
        solution.bound = self.dual_bound(cost, duals) + offset
        return solution

    def solve_mip(self, cost: np.ndarray, offset: float = 0.0, *, time_limit: float | None = None,
                  rel_gap: float = 0.0, abs_gap: float = 1e-9, target: float = -INF) -> Solution:
        """MIP minimum of ``cost @ x + offset``; stops early once below ``target``."""
        self.backend.set_cost(np.asarray(cost, dtype=np.float64))
        options = {"mip_rel_gap": rel_gap, "mip_abs_gap": abs_gap, "objective_target": target - offset}
        solution, _ = self.backend.solve(time_limit=time_limit, mip_options=options)
        solution.value += offset
        solution.bound += offset
        return solution

    def dual_bound(self, cost: np.ndarray, duals: np.ndarray | None) -> float:
        """Safe lower bound of ``min cost @ x`` from any row multipliers (module docstring)."""
        reduced = cost.copy()
        total = 0.0
        if duals is not None and self._row_blocks:
            offset = 0
            for matrix, lower, upper in zip(self._row_blocks, self._row_lower, self._row_upper):
                k = matrix.shape[0]
                lam = duals[offset:offset + k].copy()
                offset += k
                # A multiplier may only lean on a finite side of its row.
                lam[(lam > 0) & ~np.isfinite(lower)] = 0.0
                lam[(lam < 0) & ~np.isfinite(upper)] = 0.0
                side = np.where(lam > 0, lower, upper)
                total += float(np.dot(lam[lam != 0], side[lam != 0]))
                reduced[:matrix.shape[1]] -= matrix.T @ lam
        with np.errstate(invalid="ignore"):  # 0 * inf on columns that do not matter
            low_part = np.where(reduced > 0, reduced * self.col_lower, 0.0)
            high_part = np.where(reduced < 0, reduced * self.col_upper, 0.0)
        total += float(low_part.sum() + high_part.sum())
        return total if np.isfinite(total) else -INF
