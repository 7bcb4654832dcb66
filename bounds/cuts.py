"""Cutting planes in bound propagation (GCP-CROWN style).

A *cut* is a linear inequality over three kinds of variables of a ReLU network

    sum_t coeff_t * v_t  <=  rhs,    v_t one of
        x  = value of any node (e.g. a ReLU's pre-activation),
        y  = value of a ReLU node (post-activation),
        z  = indicator of a ReLU neuron, z = 1[x >= 0] in {0, 1}.

It must hold at every *counterexample* of the property for every indicator
value consistent with the pre-activation (``z = 1`` if ``x > 0``, ``0`` if
``x < 0``, either at ``x = 0``).  BICCOS's no-good cuts have this form.

**Lagrangian.**  Write ``g = rhs - sum coeff v >= 0``.  For a function ``f`` of
the network and any multiplier ``mu >= 0``, ``f >= f - mu g`` wherever the cut
holds, so the backward pass may bound

    f - mu rhs + mu sum coeff v

instead: ``+mu coeff`` is added to the backward coefficients of every value
term at its node, ``-mu rhs`` to the bias.  Indicator terms leave the ReLU
with coefficients ``A`` on ``y`` and ``c`` on ``z``; the ReLU step must then
lower-bound ``h(x) = A relu(x) + c 1[x >= 0]`` linearly over ``[l, u]``
(:func:`relu_backward_with_indicators`).  If a counterexample existed in the
domain, the bound would hold at it, so a positive bound on every clause still
proves the domain; the bound is *not* a bound on ``f`` at points violating a
cut.  Any ``mu >= 0`` is sound; they are optimized with alpha/beta (the cut
set is a :class:`~bounds.constraints.LinearConstraints` for the optimizer).

**The ReLU step.**  For unstable ``l < 0 < u`` the graph of ``h`` is two
segments, ``(l, 0)-(0, 0)`` and ``(0, c)-(u, A u + c)``; its convex envelope is
the lower hull of ``(l, 0)``, ``(0, q)``, ``(u, A u + c)`` with
``q = min(0, c)`` (equal to the LP value with the big-M indicator relaxation,
which is ideal for one neuron).  A line ``s x + b`` lies below ``h`` on
``[l, u]`` iff it lies below those three points, so for *any* slope ``s``

    b(s) = min(-s l,  q,  A u + c - s u)

gives a sound bound.  The slope is ``s_lo + alpha (s_hi - s_lo)`` between the
hull's two slopes at ``x = 0`` (``s_lo = q / -l``, ``s_hi = (A u + c - q) / u``)
when ``(0, q)`` is below the chord, else the chord; ``alpha`` is the ReLU's
alpha-CROWN parameter.  With ``c = 0`` this is exactly CROWN's ReLU rule.
Stable neurons are exact: ``l >= 0``: ``A x + c``; ``u <= 0``: ``0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from bounds.constraints import LinearConstraints
from bounds.graph import Graph
from bounds.ops.base import BackwardContext, Bounds, sum_tail

VALUE = "value"
INDICATOR = "indicator"


@dataclass(frozen=True)
class CutTerm:
    """``coeff * v`` with ``v`` the value of ``node[index]`` (``kind="value"``)
    or the indicator of ReLU node ``node``'s neuron ``index``."""

    node: str
    index: int
    coeff: float
    kind: str = VALUE


@dataclass(frozen=True)
class Cut:
    """``sum(terms) <= rhs``."""

    terms: tuple[CutTerm, ...]
    rhs: float

    def key(self) -> tuple:
        return (tuple(sorted((t.node, t.index, t.kind, round(t.coeff, 9)) for t in self.terms)),
                round(self.rhs, 9))


@dataclass
class _Terms:
    """Sparse terms of a cut set on one (node, kind): cut ``k[t]`` has
    ``coeff[t]`` on flat element ``index[t]``."""

    cut: torch.Tensor
    index: torch.Tensor
    coeff: torch.Tensor


@dataclass
class CutConstraints(LinearConstraints):
    """A set of ``K`` cuts, usable wherever constraints are accepted.

    As a :class:`LinearConstraints` it only exposes ``num_constraints`` (dummy
    ``coeffs (1, K)``) and ``const = rhs`` so that multipliers ``(B, S, K)``
    are created and optimized like split betas; the backward pass recognises
    it (``spans_nodes``) and applies it through :class:`CutPass`.
    """

    terms: dict[tuple[str, str], _Terms] = field(default_factory=dict)
    relu_inputs: dict[str, str] = field(default_factory=dict)   # ReLU node -> its input node
    cuts: list[Cut] = field(default_factory=list)
    spans_nodes: bool = True

    @classmethod
    def build(cls, graph: Graph, cuts: Sequence[Cut], like: torch.Tensor) -> "CutConstraints":
        grouped: dict[tuple[str, str], tuple[list, list, list]] = {}
        for k, cut in enumerate(cuts):
            for t in cut.terms:
                if t.kind == INDICATOR and graph.node(t.node).op.op_type != "Relu":
                    raise ValueError(f"indicator term on non-ReLU node {t.node!r}")
                ks, idx, cf = grouped.setdefault((t.node, t.kind), ([], [], []))
                ks.append(k), idx.append(t.index), cf.append(t.coeff)
        device, dtype = like.device, like.dtype
        terms = {key: _Terms(torch.tensor(ks, dtype=torch.long, device=device),
                             torch.tensor(idx, dtype=torch.long, device=device),
                             torch.tensor(cf, dtype=dtype, device=device))
                 for key, (ks, idx, cf) in grouped.items()}
        relu_inputs = {n.name: n.inputs[0] for n in graph.nodes if n.op.op_type == "Relu"}
        rhs = torch.tensor([c.rhs for c in cuts], dtype=dtype, device=device).reshape(1, -1)
        coeffs = torch.zeros(1, len(cuts), dtype=dtype, device=device)
        return cls("__cuts__", coeffs, rhs, terms, relu_inputs, list(cuts))

    def violation(self, value):  # pragma: no cover - not a single-node constraint
        raise NotImplementedError("evaluate cuts with cut_slack()")


def is_cut_set(constraint) -> bool:
    return bool(getattr(constraint, "spans_nodes", False))


class CutPass:
    """Applies cut sets with their multipliers during one backward pass."""

    def __init__(self, pairs: Sequence[tuple[CutConstraints, torch.Tensor]]):
        self.pairs = [(c, mu) for c, mu in pairs if c.num_constraints > 0]
        self.pending = {key for c, _ in self.pairs for key in c.terms}

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def constant(self) -> torch.Tensor | None:
        """``-sum_k mu_k rhs_k``, ``(B, S)``."""
        out = None
        for cuts, mu in self.pairs:
            term = -(mu * cuts.const.unsqueeze(1)).sum(-1)
            out = term if out is None else out + term
        return out

    def _shift(self, key: tuple[str, str], numel: int) -> torch.Tensor | None:
        """``sum_k mu_k coeff_k e_index`` on ``key``: ``(B, S, numel)``."""
        out = None
        for cuts, mu in self.pairs:
            terms = cuts.terms.get(key)
            if terms is None:
                continue
            values = mu[:, :, terms.cut] * terms.coeff
            shift = torch.zeros(mu.shape[0], mu.shape[1], numel, dtype=mu.dtype, device=mu.device)
            shift = shift.index_add(2, terms.index, values)
            out = shift if out is None else out + shift
        self.pending.discard(key)
        return out

    def enter(self, name: str, shape: tuple[int, ...], A: torch.Tensor | None) -> torch.Tensor | None:
        """Coefficients on node ``name`` plus the cuts' value terms there."""
        if (name, VALUE) not in self.pending:
            return A
        numel = int(np.prod(shape)) if shape else 1
        shift = self._shift((name, VALUE), numel)
        shift = shift.reshape(shift.shape[:2] + tuple(shape))
        return shift if A is None else A + shift

    def indicators(self, name: str, numel: int) -> torch.Tensor | None:
        if (name, INDICATOR) not in self.pending:
            return None
        return self._shift((name, INDICATOR), numel)

    def leftover(self, graph: Graph, bounds: Mapping[str, Bounds]) -> torch.Tensor | None:
        """Terms on nodes the pass never reached, bounded over their boxes."""
        out = None
        for key in sorted(self.pending):
            name, kind = key
            shape = graph.shape_of(name)
            numel = int(np.prod(shape)) if shape else 1
            weight = self._shift(key, numel)
            if kind == VALUE:
                lower, upper = (b.flatten(1).unsqueeze(1) for b in bounds[name])
            else:
                x_lower, x_upper = (b.flatten(1).unsqueeze(1) for b in bounds[_relu_input(self, name)])
                # z = 1 where the box is active (x >= 0), 0 where x < 0, free when unstable
                lower = (x_lower >= 0).to(weight.dtype)
                upper = ((x_upper > 0) | (x_lower >= 0)).to(weight.dtype)
            term = (weight.clamp(min=0) * lower + weight.clamp(max=0) * upper).sum(-1)
            out = term if out is None else out + term
        return out


def _relu_input(cut_pass: CutPass, relu: str) -> str:
    for cuts, _ in cut_pass.pairs:
        if relu in cuts.relu_inputs:
            return cuts.relu_inputs[relu]
    raise KeyError(relu)


def relu_backward_with_indicators(op, A: torch.Tensor, indicator: torch.Tensor, ctx: BackwardContext):
    """Lower bound of ``sum(A * relu(x) + c * 1[x >= 0])`` linear in ``x``
    (module docstring).  ``indicator``: ``c`` as ``(B, S, numel)``."""
    lower, upper = ctx.input_bounds[0]
    lower, upper = lower.unsqueeze(1), upper.unsqueeze(1)
    c = indicator.reshape(indicator.shape[:2] + tuple(A.shape[2:]))
    A, c = torch.broadcast_tensors(A, c)
    relax = op.relax(lower, upper, ctx.params)
    a_pos, a_neg = A.clamp(min=0), A.clamp(max=0)
    slope = a_pos * relax.lower_slope + a_neg * relax.upper_slope
    bias = a_pos * relax.lower_bias + a_neg * relax.upper_bias
    active = lower >= 0
    unstable = (lower < 0) & (upper > 0)
    bias = bias + torch.where(active, c, torch.zeros_like(c))

    # unstable neurons touched by a cut: line under the hull of the three points
    safe_l = torch.where(unstable, lower, -torch.ones_like(lower))
    safe_u = torch.where(unstable, upper, torch.ones_like(upper))
    if ctx.params is not None and "alpha" in ctx.params:
        alpha = ctx.params["alpha"]
    else:
        alpha = (upper > -lower).to(lower.dtype)
    q = c.clamp(max=0)
    end = A * safe_u + c                      # h(u)
    s_lo = q / (-safe_l)
    s_hi = (end - q) / safe_u
    chord = end / (safe_u - safe_l)
    s = torch.where(s_lo <= s_hi, s_lo + alpha * (s_hi - s_lo), chord)
    b = torch.minimum(torch.minimum(-s * safe_l, q), end - s * safe_u)
    # rounding: keep the line an ulp-scale margin below the three points
    eps = torch.finfo(lower.dtype).eps
    b = b - 4 * eps * (s.abs() * (safe_u - safe_l) + A.abs() * safe_u + c.abs() + 1e-30)
    use = unstable & (c != 0)
    slope = torch.where(use, s, slope)
    bias = torch.where(use, b, bias)
    return [slope], sum_tail(bias)


# ------------------------------------------------------------------ evaluation
def cut_slack(cuts: Sequence[Cut], values: Mapping[str, torch.Tensor], graph: Graph) -> torch.Tensor:
    """``rhs - lhs`` of every cut at concrete points (``values`` from
    ``graph.forward(x, keep=True)``), with ``z = 1[x >= 0]``: ``(N, K)``."""
    relu_inputs = {n.name: n.inputs[0] for n in graph.nodes if n.op.op_type == "Relu"}
    n = next(iter(values.values())).shape[0]
    out = torch.zeros(n, len(cuts), dtype=torch.float64)
    for k, cut in enumerate(cuts):
        lhs = torch.zeros(n, dtype=torch.float64)
        for t in cut.terms:
            if t.kind == VALUE:
                v = values[t.node].flatten(1)[:, t.index].double()
            else:
                v = (values[relu_inputs[t.node]].flatten(1)[:, t.index] >= 0).double()
            lhs = lhs + t.coeff * v
        out[:, k] = cut.rhs - lhs
    return out


# --------------------------------------------------------------- LP/MIP oracle
def cut_program_minimum(graph: Graph, input_lower, input_upper, spec_vector, cuts: Sequence[Cut],
                        intermediate, *, integer: bool) -> float:
    """Minimum of ``spec_vector @ output`` over the triangle LP (or the exact
    big-M MIP, ``integer=True``) with indicator columns on every ReLU neuron
    and the cuts added as rows.  ``intermediate``: pre-activation boxes keyed
    by the ReLU input nodes.  Cut terms may use ReLU inputs, ReLU outputs and
    indicators.  Returns ``inf`` when infeasible."""
    import scipy.sparse as sp  # only the LP/MIP oracle needs it (~70 ms import per verifier run otherwise)

    from bounds.lp import _flat64, _relaxation  # the oracle's own encoding

    relax = _relaxation(_encode(graph), input_lower, input_upper, intermediate, "highs", refine_stable=False)
    program = relax.program
    ind_cols: dict[str, int] = {}
    for unit in relax.net.relus:
        lower, upper = relax.pre_bounds[unit.input_name]
        active, unstable = lower >= 0, (lower < 0) & (upper > 0)
        start = program.add_columns(np.where(active, 1.0, 0.0), np.where(active | unstable, 1.0, 0.0),
                                    integer=integer)
        ind_cols[unit.name] = start
        loose = np.flatnonzero(unstable)
        if len(loose) == 0:
            continue
        y_cols = relax.columns[unit.name] + loose
        x_cols = relax.pre_columns[unit.input_name] + loose
        a_cols = start + loose
        r = np.arange(len(loose))
        n_cols = program.num_cols
        m = len(loose)
        program.add_rows(sp.csr_matrix((np.concatenate([np.ones(m), -np.ones(m), -lower[loose]]),
                                        (np.tile(r, 3), np.concatenate([y_cols, x_cols, a_cols]))),
                                       shape=(m, n_cols)), -np.inf, -lower[loose])      # y <= x - l (1 - a)
        program.add_rows(sp.csr_matrix((np.concatenate([np.ones(m), -upper[loose]]),
                                        (np.tile(r, 2), np.concatenate([y_cols, a_cols]))),
                                       shape=(m, n_cols)), -np.inf, 0.0)                # y <= u a
    relu_of_input = {u.input_name: u.name for u in relax.net.relus}
    rows, cols, vals, rhs = [], [], [], []
    for i, cut in enumerate(cuts):
        for t in cut.terms:
            if t.kind == INDICATOR:
                col = ind_cols[t.node] + t.index
            elif t.node in relax.columns and t.node in ind_cols:
                col = relax.columns[t.node] + t.index                 # a ReLU output
            elif t.node in relu_of_input:
                col = relax.pre_columns[t.node] + t.index             # a ReLU input
            else:
                raise ValueError(f"cut term on {t.node!r}: only ReLU inputs/outputs/indicators are encoded")
            rows.append(i), cols.append(col), vals.append(t.coeff)
        rhs.append(cut.rhs)
    if cuts:
        program.add_rows(sp.csr_matrix((vals, (rows, cols)), shape=(len(cuts), program.num_cols)),
                         -np.inf, np.array(rhs))
    spec = _flat64(spec_vector).reshape(1, -1)
    cost = relax.expression_matrix(relax.net.output, spec).toarray()[0]
    cost = np.concatenate([cost, np.zeros(program.num_cols - len(cost))])
    offset = float(spec[0] @ relax.net.output.bias)
    if integer:
        solution = program.solve_mip(cost, offset)
        return float("inf") if solution.status == "infeasible" else solution.value
    solution = program.minimize(cost, offset)
    return float("inf") if solution.status == "infeasible" else solution.bound


def _encode(graph: Graph):
    from bounds.lp_encode import encode_graph
    return encode_graph(graph)
