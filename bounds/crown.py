"""CROWN: backward propagation of linear bounds over the graph.

A backward pass from a *start* node bounds ``sum(A * y_start)`` from below for
every spec row: walking the ancestors of the start node in reverse
topological order, each operator turns the coefficients on its output into
coefficients on its inputs plus a constant (``Operator.backward``; fan-out is
handled by summing the coefficients that reach a node from each consumer).
At the graph input the remaining linear function is minimized over the box

    min_{x in [l, u]} sum(A * x) = A . c - |A| . r,   c = (u + l) / 2, r = (u - l) / 2.

Intermediate bounds: every node read by a nonlinear operator needs a box
(the relaxations depend on it).  They are computed in one topological sweep:
IBP from the already tightened inputs, then a backward pass started at the
node with identity rows ``[+e_i; -e_i]`` (lower and upper bound of neuron i),
intersected with the IBP box.  For nodes read only by ReLU-like operators the
rows are restricted to the neurons the IBP box leaves unstable: the others
are relaxed exactly whatever their bounds are.  Outputs of element-wise
activations (inputs of MaxPool, products, ...) keep their IBP box: given the
(CROWN-tightened) box of their input it is already the tightest per-element
box, and a backward pass through the activation's relaxation cannot beat it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from bounds.constraints import LinearConstraints, apply_multipliers
from bounds.cuts import CutPass, is_cut_set, relu_backward_with_indicators
from bounds.forward import ForwardSweep, tighten
from bounds.graph import Graph, Node
from bounds.ibp import intersect, node_interval
from bounds.ops.base import BackwardContext, Bounds, ElementwiseNonlinear, sum_tail

#: Operators whose relaxation is exact wherever the input does not straddle 0
#: (row selection only affects tightness: every box kept is valid).
PIECEWISE_AT_ZERO = ("Relu", "LeakyRelu", "Sign")

#: Step functions: relaxations with slope 0 almost everywhere.
STEP_OPS = ("Sign", "Floor")
#: rows bounded first, behind step functions, to see if backward passes pay
STEP_PROBE_ROWS = 32

Params = Mapping[str, Mapping[str, torch.Tensor]]  # node name -> param name -> tensor


def _add(a, b):
    if a is None:
        return b
    return a + b


@dataclass
class RowSet:
    """Neurons of one node whose bounds are computed by backward passes."""

    index: torch.Tensor  # (R,) flat indices into the node's elements
    numel: int

    @property
    def num_rows(self) -> int:
        """Rows of the stacked ``[+I; -I]`` start coefficients."""
        return 2 * int(self.index.numel())


@dataclass
class Propagator:
    """Backward passes on one graph for one input box ``(B, *input_shape)``."""

    graph: Graph
    input_lower: torch.Tensor
    input_upper: torch.Tensor
    max_coeff_elements: int = 2 ** 24
    stats: dict = field(default_factory=lambda: {"backward_passes": 0, "rows": 0})
    #: optional observer ``hook(name, A)`` called with the coefficients on each
    #: node's output (and finally on the graph input) during :meth:`backward`;
    #: BaB reads them for branching scores and relaxed minimizers
    coefficient_hook: Callable[[str, torch.Tensor], None] | None = None
    #: ``time.monotonic()`` after which no further backward chunk starts: the
    #: rows left get ``-inf`` (callers intersect with IBP, so bounds stay valid)
    deadline: float | None = None

    def __post_init__(self) -> None:
        self.center = (self.input_upper + self.input_lower) / 2
        self.radius = (self.input_upper - self.input_lower) / 2
        self.batch = int(self.input_lower.shape[0])
        self._ancestors: dict[str, list[Node]] = {}
        self._widest: dict[str, int] = {}
        self._points: dict[str, tuple] = {}
        consumers = self.graph.consumers()
        nonlinear = [n for n in self.graph.nodes if not n.op.is_linear]
        #: nodes whose boxes the relaxations need, in topological order
        self.needs_bounds: list[str] = []
        self.relu_only: dict[str, bool] = {}
        wanted = {i for n in nonlinear for i in n.inputs}
        for node in self.graph.nodes:
            if node.name in wanted:
                self.needs_bounds.append(node.name)
                users = [u for u in consumers.get(node.name, []) if not u.op.is_linear]
                self.relu_only[node.name] = all(u.op.op_type in PIECEWISE_AT_ZERO for u in users)

    # ---------------------------------------------------------------- helpers
    def ancestors(self, name: str) -> list[Node]:
        if name not in self._ancestors:
            self._ancestors[name] = self.graph.ancestors(name)
        return self._ancestors[name]

    def widest(self, name: str) -> int:
        """Largest per-sample element count met by a pass started at ``name``."""
        if name not in self._widest:
            sizes = [n.numel for n in self.ancestors(name)] + [self.graph.input_numel]
            self._widest[name] = max(sizes)
        return self._widest[name]

    def chunk_rows(self, name: str, num_rows: int) -> int:
        per_row = self.batch * self.widest(name)
        return max(1, min(num_rows, self.max_coeff_elements // max(per_row, 1)))

    def is_affine_of_input(self, name: str) -> bool:
        """One linear op applied to the input: its IBP box is already exact."""
        anc = self.ancestors(name)
        return len(anc) == 1 and anc[0].op.is_linear

    def sweep_cost(self, row_sets: Mapping[str, RowSet]) -> int:
        """Rough cost of re-deriving the intermediate bounds: rows times the
        elements met on each backward path."""
        return sum(rows.num_rows * (sum(n.numel for n in self.ancestors(name)) + self.graph.input_numel)
                   for name, rows in row_sets.items())

    def is_affine_prefix(self, name: str) -> bool:
        """Only linear operators between the input and ``name``."""
        return all(n.op.is_linear for n in self.ancestors(name))

    def affine_box(self, name: str) -> Bounds:
        """Exact box of an affine function ``y = J x + c`` of the input, by
        forward evaluation: ``y(centre) -+ sum_i |y(r_i e_i) - y(0)|``.

        Costs ``input_numel`` forward evaluations instead of one backward row
        per neuron: the cheaper way when the input is small (bias-field and
        other low-dimensional parametrizations feeding wide layers).
        """
        nodes = self.ancestors(name)

        def run(x: torch.Tensor) -> torch.Tensor:
            values = {self.graph.input_name: x}
            for node in nodes:
                values[node.name] = node.op.forward(*(values[i] for i in node.inputs))
            return values[name]

        batch, n_in = self.batch, self.graph.input_numel
        in_shape = tuple(self.graph.input_shape)
        center_out = run(self.center)
        origin = run(torch.zeros_like(self.center[:1]))
        radius_flat = self.radius.flatten(1)  # (B, n_in)
        spread = torch.zeros_like(center_out)
        step = max(1, self.max_coeff_elements // max(batch * self.widest(name), 1))
        for i0 in range(0, n_in, step):
            i1 = min(n_in, i0 + step)
            count = i1 - i0
            probe = torch.zeros(batch, count, n_in, dtype=self.center.dtype, device=self.center.device)
            index = torch.arange(count, device=probe.device)
            probe[:, index, i0 + index] = radius_flat[:, i0:i1]
            out = run(probe.reshape((batch * count,) + in_shape))
            out = out.reshape((batch, count) + tuple(out.shape[1:]))
            spread = spread + (out - origin.unsqueeze(1)).abs().sum(1)
        return center_out - spread, center_out + spread

    def point_value(self, name: str, bounds: Mapping[str, Bounds]) -> torch.Tensor | None:
        """The node's value ``(B|1, *shape)`` when its box is a single point in
        every domain (it depends only on zero-width inputs), else ``None``.
        Checked once per box tensor."""
        box = bounds.get(name)
        if box is None:
            return None
        lower, upper = box
        cached = self._points.get(name)
        if cached is not None and cached[0] is lower and cached[1] is upper:
            return cached[2]
        point = lower if torch.equal(lower.detach(), upper.detach()) else None
        self._points[name] = (lower, upper, point)
        return point

    # ------------------------------------------------------------- one pass
    def backward(self, start: str, coeffs: torch.Tensor, bounds: Mapping[str, Bounds],
                 params: Params | None = None,
                 constraints: Sequence[tuple[LinearConstraints, torch.Tensor]] = ()) -> torch.Tensor:
        """Lower bound ``(B, S)`` of ``sum(coeffs * y_start)`` over the box.

        ``coeffs``: ``(B|1, S, *start_shape)``.  ``params``: relaxation
        parameters per nonlinear node for this pass (rows already matching
        ``S`` or broadcasting).  ``constraints``: ``(constraint, beta)`` pairs
        with ``beta: (B, S, K) >= 0`` folded in at the constraint's node.
        """
        self.stats["backward_passes"] += 1
        self.stats["rows"] += int(coeffs.shape[1])
        by_node: dict[str, list] = {}
        for constraint, beta in constraints:
            if not is_cut_set(constraint):
                by_node.setdefault(constraint.node, []).append((constraint, beta))
        # cut sets span several nodes (values and ReLU indicators): bounds/cuts.py
        cut_pass = CutPass([(c, beta) for c, beta in constraints if is_cut_set(c)])
        pending: dict[str, torch.Tensor] = {start: coeffs}
        bias = cut_pass.constant() if cut_pass else None
        for node in reversed(self.ancestors(start)):
            A = pending.pop(node.name, None)
            if cut_pass:
                A = cut_pass.enter(node.name, tuple(node.shape), A)
            if A is None:
                continue
            for constraint, beta in by_node.get(node.name, ()):
                A, extra = apply_multipliers(A, constraint, beta)
                bias = _add(bias, extra)
            if self.coefficient_hook is not None:
                self.coefficient_hook(node.name, A)
            ctx = BackwardContext(
                input_shapes=[self.graph.shape_of(i) for i in node.inputs],
                input_bounds=[bounds.get(i) for i in node.inputs],
                params=None if params is None else params.get(node.name),
            )
            indicator = cut_pass.indicators(node.name, node.numel) if cut_pass else None
            point = self.point_value(node.name, bounds) if indicator is None else None
            if point is not None:
                # the node is a known constant on every domain: sum(A * y) is exact, stop here
                bias = _add(bias, sum_tail(A * point.unsqueeze(1)))
                continue
            if indicator is not None:
                A_inputs, step_bias = relu_backward_with_indicators(node.op, A, indicator, ctx)
            else:
                A_inputs, step_bias = node.op.backward(A, ctx)
            if not (isinstance(step_bias, float) and step_bias == 0.0):
                bias = _add(bias, step_bias)
            for name, A_in in zip(node.inputs, A_inputs):
                if A_in is not None:
                    pending[name] = _add(pending.get(name), A_in)
        A = pending.pop(self.graph.input_name, None)
        if cut_pass:
            A = cut_pass.enter(self.graph.input_name, tuple(self.graph.input_shape), A)
            leftover = cut_pass.leftover(self.graph, bounds)
            if leftover is not None:
                bias = _add(bias, leftover)
        for constraint, beta in by_node.get(self.graph.input_name, ()):
            if A is None:
                A = torch.zeros((1, coeffs.shape[1]) + tuple(self.graph.input_shape),
                                dtype=coeffs.dtype, device=coeffs.device)
            A, extra = apply_multipliers(A, constraint, beta)
            bias = _add(bias, extra)
        if self.coefficient_hook is not None and A is not None:
            self.coefficient_hook(self.graph.input_name, A)
        result = torch.zeros(self.batch, coeffs.shape[1], dtype=coeffs.dtype, device=coeffs.device)
        if A is not None:
            flat = A.flatten(2)
            center = self.center.flatten(1).unsqueeze(-1)
            radius = self.radius.flatten(1).unsqueeze(-1)
            result = result + torch.matmul(flat, center).squeeze(-1) - torch.matmul(flat.abs(), radius).squeeze(-1)
        if bias is not None:
            result = result + bias
        return result

    # -------------------------------------------------------- chunked passes
    def bound_rows(self, start: str, make_coeffs: Callable[[int, int], torch.Tensor], num_rows: int,
                   bounds: Mapping[str, Bounds], params: Params | None = None,
                   constraints: Sequence[tuple[LinearConstraints, torch.Tensor]] = ()) -> torch.Tensor:
        """Lower bounds ``(B, num_rows)`` of ``num_rows`` linear functions of
        ``y_start``, chunked so the coefficients stay under the element cap.

        ``make_coeffs(r0, r1)`` builds rows ``r0..r1-1``; per-row parameters
        (second axis ``num_rows``) and betas are sliced to match.
        """
        step = self.chunk_rows(start, num_rows)
        if step >= num_rows and not self.past_deadline():
            return self.backward(start, make_coeffs(0, num_rows), bounds, params, constraints)
        parts = []
        for r0 in range(0, num_rows, step):
            r1 = min(num_rows, r0 + step)
            if self.past_deadline():
                self.stats["rows_skipped"] = self.stats.get("rows_skipped", 0) + num_rows - r0
                parts.append(torch.full((self.batch, num_rows - r0), -float("inf"),
                                        dtype=self.input_lower.dtype, device=self.input_lower.device))
                break
            chunk_params = None
            if params is not None:
                chunk_params = {node: {k: (v[:, r0:r1] if v.dim() > 1 and v.shape[1] == num_rows else v)
                                       for k, v in p.items()} for node, p in params.items()}
            chunk_constraints = [(c, beta[:, r0:r1]) for c, beta in constraints]
            parts.append(self.backward(start, make_coeffs(r0, r1), bounds, chunk_params, chunk_constraints))
        return torch.cat(parts, dim=1)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    # ---------------------------------------------------- intermediate bounds
    def behind_step(self, name: str) -> bool:
        """A step function (Sign, Floor) lies between the input and ``name``."""
        return any(n.op.op_type in STEP_OPS for n in self.ancestors(name))

    def probe_rows(self, name: str, box: Bounds, bounds: Mapping[str, Bounds], rows: RowSet) -> RowSet:
        """Rows worth a backward pass behind step functions.

        The step relaxations are mostly flat (slope 0), so the pass often
        reproduces the IBP box at a cost of one row per neuron (traffic_signs:
        80 s for nothing).  Bound a spread sample of ``STEP_PROBE_ROWS`` rows
        first; when none beats the box, keep the box (it is valid) and start
        no pass for the other rows.
        """
        count = int(rows.index.numel())
        pick = torch.linspace(0, count - 1, STEP_PROBE_ROWS, device=rows.index.device).round().long().unique()
        probe = RowSet(rows.index[pick], rows.numel)
        lower, upper = box
        tight_lower, tight_upper = self.node_bounds(name, box, bounds, probe)
        scale = (upper - lower).abs().amax().clamp(min=1e-12)
        gain = torch.maximum(tight_lower - lower, upper - tight_upper).amax()
        self.stats["step_probes"] = self.stats.get("step_probes", 0) + 1
        if float(gain) > 1e-4 * float(scale):
            return rows
        return probe

    def select_rows(self, name: str, box: Bounds) -> RowSet:
        """Neurons of ``name`` to bound by backward passes."""
        numel = self.graph.node(name).numel
        lower, upper = box
        if self.relu_only.get(name, False):
            unstable = ((lower < 0) & (upper > 0)).reshape(lower.shape[0], -1).any(0)
            index = unstable.nonzero().flatten()
        else:
            # a point box (lower == upper in every domain) is already exact:
            # e.g. neurons fed only by inputs whose box has zero width (nn4sys)
            wide = (upper > lower).reshape(lower.shape[0], -1).any(0)
            if lower.shape[1:].numel() != numel:  # unexpected layout: keep every neuron
                wide = torch.ones(numel, dtype=torch.bool, device=lower.device)
            index = wide.nonzero().flatten()
        return RowSet(index, numel)

    def identity_rows(self, name: str, rows: RowSet, like: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        """``make_coeffs`` for the stacked rows ``[+e_i; -e_i]`` of ``rows``."""
        shape = tuple(self.graph.node(name).shape)
        count = int(rows.index.numel())
        positions = torch.cat([rows.index, rows.index])
        signs = torch.cat([torch.ones(count, dtype=like.dtype, device=like.device),
                           -torch.ones(count, dtype=like.dtype, device=like.device)])

        def make(r0: int, r1: int) -> torch.Tensor:
            A = torch.zeros(r1 - r0, rows.numel, dtype=like.dtype, device=like.device)
            A[torch.arange(r1 - r0, device=like.device), positions[r0:r1]] = signs[r0:r1]
            return A.reshape((1, r1 - r0) + shape)

        return make

    def node_bounds(self, name: str, box: Bounds, bounds: Mapping[str, Bounds], rows: RowSet,
                    params: Params | None = None) -> Bounds:
        """Tighten ``box`` on the neurons of ``rows`` by a backward pass from ``name``."""
        count = int(rows.index.numel())
        if count == 0:
            return box
        lower, upper = box
        stacked = self.bound_rows(name, self.identity_rows(name, rows, lower), 2 * count, bounds, params)
        new_lower, neg_upper = stacked[:, :count], stacked[:, count:]
        flat_lower, flat_upper = lower.reshape(lower.shape[0], -1), upper.reshape(upper.shape[0], -1)
        if flat_lower.shape[0] != new_lower.shape[0]:
            flat_lower = flat_lower.expand(new_lower.shape[0], -1)
            flat_upper = flat_upper.expand(new_lower.shape[0], -1)
        flat_lower = flat_lower.index_copy(1, rows.index, torch.maximum(flat_lower[:, rows.index], new_lower))
        flat_upper = flat_upper.index_copy(1, rows.index, torch.minimum(flat_upper[:, rows.index], -neg_upper))
        shape = (flat_lower.shape[0],) + tuple(lower.shape[1:])
        return flat_lower.reshape(shape), flat_upper.reshape(shape)

    def intermediate_bounds(self, supplied: Mapping[str, Bounds] | None = None,
                            reference: Mapping[str, Bounds] | None = None,
                            row_sets: dict[str, RowSet] | None = None,
                            params_by_start: Mapping[str, Params] | None = None,
                            forward: ForwardSweep | None = None,
                            ) -> tuple[dict[str, Bounds], dict[str, RowSet]]:
        """Boxes of every node, with CROWN boxes for the nodes relaxations read.

        ``supplied`` boxes are trusted and used as they are (intersected with
        IBP).  ``reference`` boxes (earlier valid bounds, e.g. from plain CROWN)
        are intersected in, so re-derived bounds never get looser.  ``row_sets``
        fixes which neurons get backward passes (default: chosen from the IBP
        box).  ``params_by_start`` gives alpha parameters per start node.
        ``forward``: a forward-mode sweep (:mod:`bounds.forward`) advanced node
        by node on the boxes kept so far; its boxes are intersected in before
        the rows are chosen, so backward passes only go where it left neurons
        unstable.
        """
        supplied = supplied or {}
        reference = reference or {}
        chosen: dict[str, RowSet] = {}
        bounds: dict[str, Bounds] = {self.graph.input_name: (self.input_lower, self.input_upper)}
        targets = set(self.needs_bounds)
        for node in self.graph.nodes:
            box = self._node_box(node, bounds, supplied, reference, row_sets, params_by_start, targets, chosen,
                                 forward)
            bounds[node.name] = box
            if forward is not None:
                forward.settle(node, box)
        return bounds, chosen

    def _node_box(self, node: Node, bounds, supplied, reference, row_sets, params_by_start, targets, chosen,
                  forward: ForwardSweep | None) -> Bounds:
        """One node's box for :meth:`intermediate_bounds` (records its row set in ``chosen``)."""
        box = node_interval(node, bounds)
        if forward is not None:
            box = tighten(box, forward.advance(node, bounds))
        if node.name in supplied:
            return intersect(box, supplied[node.name])
        if node.name not in targets:
            return box
        box = intersect(box, reference.get(node.name))
        if self.is_affine_of_input(node.name) or isinstance(node.op, ElementwiseNonlinear):
            return box
        rows = row_sets[node.name] if row_sets is not None and node.name in row_sets \
            else self.select_rows(node.name, box)
        if self.past_deadline():
            return box
        if rows.num_rows > self.graph.input_numel and self.is_affine_prefix(node.name):
            return intersect(box, self.affine_box(node.name))
        params = None if params_by_start is None else params_by_start.get(node.name)
        if params is None and row_sets is None and self.behind_step(node.name) \
                and rows.index.numel() > 2 * STEP_PROBE_ROWS:
            rows = self.probe_rows(node.name, box, bounds, rows)
        chosen[node.name] = rows
        return self.node_bounds(node.name, box, bounds, rows, params)

    # ------------------------------------------------------------- the spec
    def spec_lower(self, spec_matrix: torch.Tensor, spec_offset: torch.Tensor | None,
                   bounds: Mapping[str, Bounds], params: Params | None = None,
                   constraints: Sequence[tuple[LinearConstraints, torch.Tensor]] = ()) -> torch.Tensor:
        """Lower bound ``(B, S)`` of ``spec_matrix @ flatten(y) - spec_offset``."""
        out_shape = tuple(self.graph.output_shape)
        num_rows = int(spec_matrix.shape[1])

        def make(r0: int, r1: int) -> torch.Tensor:
            rows = spec_matrix[:, r0:r1]
            return rows.reshape(rows.shape[:2] + out_shape)

        result = self.bound_rows(self.graph.output_name, make, num_rows, bounds, params, constraints)
        if spec_offset is not None:
            result = result - spec_offset
        return result
