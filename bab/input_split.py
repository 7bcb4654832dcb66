"""Input-split branch and bound for low-dimensional inputs.

The input box is cut into sub-boxes; each pass bounds a whole batch of them
(thousands) with CROWN (or a few alpha-CROWN iterations), drops the verified
ones, halves the rest along the best-scored dimension
(:mod:`bab.input_branching`) and looks for counterexamples on the way:

* a box is **verified** when every clause has a row whose certified lower
  bound of ``C_j y - d_j`` exceeds ``PROOF_TOLERANCE`` (the clause, a
  conjunction, holds nowhere in the box);
* every pass the network is evaluated at each open box's centre and at the
  vertex minimizing its deciding row's linear bound; every few passes a short
  PGD runs inside the worst boxes.  Points whose margin is ``<= 0`` in torch
  go to the validator (onnxruntime); only confirmed ones answer ``sat``.

Several roots (e.g. nn4sys: thousands of input boxes, each its own property)
are searched together: every domain remembers its root, whose spec matrix
(``(P, S, n_out)``) it uses, so one pass bounds boxes of many properties.

The search is complete for piecewise-linear networks: boxes shrink until the
relaxations are exact or a vertex/centre falsifies.  For other operators it
stops at the deadline when neither happens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from bab.input_branching import BRANCHING_RULES, split_boxes, split_scores
from bab.types import PROOF_TOLERANCE, BabConfig, BabOutcome, Validator
from bounds.alpha import SPEC_START
from bounds.crown import Propagator
from bounds.engine import BoundConfig, compute_bounds, forward_sweep
from bounds.graph import Graph

#: Upper bound of the adaptive batch size; a pass should take well under 1 s.
MAX_BATCH = 16384
TARGET_PASS_SECONDS = 0.4


@dataclass
class SearchSettings:
    """Resolved knobs of one input-split search (see :func:`resolve_settings`)."""

    batch_size: int
    adaptive_batch: bool
    alpha_iterations: int        # 0: plain CROWN
    branching: str
    attack_interval: int
    max_domains: int
    candidates_per_pass: int = 8


def resolve_settings(graph: Graph, config: BabConfig) -> SearchSettings:
    """Fill the zero-config knobs: the batch starts from the network size and
    adapts to the measured pass time unless ``config.batch_size`` fixes it."""
    widest = max([n.numel for n in graph.nodes] + [graph.input_numel])
    relaxed = sum(n.numel for n in graph.nodes if not n.op.is_linear)
    guess = int(2 ** 22 // max(1, widest * max(relaxed, 1)))
    batch = config.batch_size or max(64, min(4096, guess))
    return SearchSettings(
        batch_size=batch,
        adaptive_batch=config.batch_size is None,
        alpha_iterations=0 if config.alpha_iterations is None else int(config.alpha_iterations),
        branching=config.branching if config.branching in BRANCHING_RULES else _default_rule(graph),
        attack_interval=max(1, config.attack_interval),
        max_domains=config.max_domains,
    )


def _default_rule(graph: Graph) -> str:
    """``"blend"`` when the graph has smooth nonlinearities (their looseness is
    in relaxation biases the coefficients miss), else ``"coefficient"``;
    measured in :mod:`bab.input_branching`."""
    piecewise_linear = ("Relu", "LeakyRelu", "MaxPool", "Sign", "Abs", "Clip", "Min", "Max")
    smooth = any(not n.op.is_linear and n.op.op_type not in piecewise_linear for n in graph.nodes)
    return "blend" if smooth else "coefficient"


# --------------------------------------------------------------- bounding
def _input_coefficients(prop: Propagator, spec_matrix: torch.Tensor, boxes, params=None):
    """Backward pass from the spec rows that also returns the input coefficients.

    Returns ``(coeffs (B, S, n_in), bias (B, S))`` with
    ``C y >= coeffs . x + bias`` on the box (the same relaxations as
    :meth:`Propagator.spec_lower`, which only returns the concretized value).
    """
    graph = prop.graph
    out_shape = tuple(graph.output_shape)
    pending = {graph.output_name: spec_matrix.reshape(spec_matrix.shape[:2] + out_shape)}
    bias = torch.zeros(spec_matrix.shape[:2], dtype=spec_matrix.dtype, device=spec_matrix.device)
    from bounds.ops.base import BackwardContext

    for node in reversed(prop.ancestors(graph.output_name)):
        A = pending.pop(node.name, None)
        if A is None:
            continue
        ctx = BackwardContext(input_shapes=[graph.shape_of(i) for i in node.inputs],
                              input_bounds=[boxes.get(i) for i in node.inputs],
                              params=None if params is None else params.get(node.name))
        A_inputs, step_bias = node.op.backward(A, ctx)
        bias = bias + step_bias
        for name, A_in in zip(node.inputs, A_inputs):
            if A_in is not None:
                pending[name] = A_in if name not in pending else pending[name] + A_in
    A = pending.pop(graph.input_name, None)
    batch = int(prop.batch)
    if A is None:
        A = torch.zeros((batch, spec_matrix.shape[1], graph.input_numel), dtype=bias.dtype, device=bias.device)
    coeffs = A.flatten(2).expand(batch, -1, -1)
    return coeffs, bias.expand(batch, -1)


def bound_boxes(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, spec_matrix: torch.Tensor,
                spec_offset: torch.Tensor, alpha_iterations: int = 0,
                deadline: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified lower bounds ``(B, S)`` of ``C y - d`` on boxes ``(B, n_in)``
    (flattened) and the linear bound's input coefficients ``(B, S, n_in)``.

    CROWN with CROWN intermediate bounds; with ``alpha_iterations > 0`` the
    spec pass's relaxation slopes are optimized by alpha-CROWN (the bound
    returned is the better of the two, per row)."""
    shape = (lower.shape[0],) + tuple(graph.input_shape)
    x_lower, x_upper = lower.reshape(shape), upper.reshape(shape)
    if alpha_iterations > 0:
        config = BoundConfig(method="alpha-crown", alpha_iterations=alpha_iterations)
        result = compute_bounds(graph, x_lower, x_upper, spec_matrix, spec_offset, config=config,
                                deadline=deadline)
        prop = Propagator(graph, x_lower, x_upper)
        params = (result.alphas or {}).get(SPEC_START)
        with torch.no_grad():
            coeffs, _ = _input_coefficients(prop, spec_matrix, result.intermediate, params)
        return result.lower, coeffs
    with torch.no_grad():
        prop = Propagator(graph, x_lower, x_upper)
        boxes, _ = prop.intermediate_bounds(forward=forward_sweep(graph, x_lower, x_upper))
        coeffs, bias = _input_coefficients(prop, spec_matrix, boxes)
        center = ((upper + lower) / 2).unsqueeze(-1)
        radius = ((upper - lower) / 2).unsqueeze(-1)
        value = torch.matmul(coeffs, center).squeeze(-1) - torch.matmul(coeffs.abs(), radius).squeeze(-1)
        bound = value + bias - spec_offset
        # the IBP box of the output is valid too: keep the better bound per row
        out_lower, out_upper = boxes[graph.output_name]
        batch = out_lower.shape[0]  # reshape, not flatten(1): the output may be a scalar per sample
        out_lower, out_upper = out_lower.reshape(batch, 1, -1), out_upper.reshape(batch, 1, -1)
        ibp = (spec_matrix.clamp(min=0) * out_lower + spec_matrix.clamp(max=0) * out_upper).sum(-1) - spec_offset
        return torch.maximum(bound, ibp), coeffs


# ------------------------------------------------------------- clause logic
@dataclass
class ClauseLayout:
    """Which rows form which clause: ``member (S, K)`` one-hot."""

    member: torch.Tensor

    @classmethod
    def from_rows(cls, clause_of_row: Sequence[int], dtype, device) -> "ClauseLayout":
        rows = torch.as_tensor(list(clause_of_row), dtype=torch.long, device=device)
        num_clauses = int(rows.max()) + 1 if rows.numel() else 0
        member = torch.zeros(rows.numel(), num_clauses, dtype=torch.bool, device=device)
        member[torch.arange(rows.numel(), device=device), rows] = True
        return cls(member)

    def clause_best(self, lower: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per box and clause, the best row bound ``(B, K)`` and its row index."""
        masked = lower.unsqueeze(-1).masked_fill(~self.member, -float("inf"))
        return masked.max(dim=1)

    def margins(self, values: torch.Tensor) -> torch.Tensor:
        """Concrete violation margin per point: ``min_k max_{j in k} (C_j y - d_j)``;
        ``<= 0`` means some clause (a conjunction) holds: a counterexample."""
        return self.clause_best(values)[0].amin(dim=1)


def target_rows(layout: ClauseLayout, lower: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(verified (B,), key (B,), row (B,))``: a box is verified when every
    clause has a row above the tolerance; otherwise ``key`` is the best row
    bound of its worst open clause (the box's priority: lower is worse) and
    ``row`` that row (the one branching and the vertex attack follow)."""
    best, best_row = layout.clause_best(lower)
    proven = best > PROOF_TOLERANCE
    verified = proven.all(dim=1)
    open_best = best.masked_fill(proven, float("inf"))
    key, clause = open_best.min(dim=1)
    row = best_row.gather(1, clause.unsqueeze(1)).squeeze(1)
    return verified, key, row


# ----------------------------------------------------------------- attacks
def _forward_margins(graph: Graph, points: torch.Tensor, spec_matrix: torch.Tensor, spec_offset: torch.Tensor,
                     layout: ClauseLayout) -> torch.Tensor:
    y = graph.forward(points.reshape((points.shape[0],) + tuple(graph.input_shape))).reshape(points.shape[0], -1)
    values = torch.einsum("bso,bo->bs", spec_matrix, y) - spec_offset
    return layout.margins(values)


def pgd_in_boxes(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, spec_matrix: torch.Tensor,
                 spec_offset: torch.Tensor, layout: ClauseLayout, steps: int, deadline: float,
                 start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed-gradient descent of the margin inside each box (one start per
    box); returns the best point ``(B, n)`` and its margin ``(B,)``."""
    width = upper - lower
    unit = torch.full_like(lower, 0.5) if start is None else ((start - lower) / width.clamp(min=1e-30)).clamp(0, 1)
    best_point = lower + unit * width
    best_margin = torch.full((lower.shape[0],), float("inf"), dtype=lower.dtype, device=lower.device)
    step = 0.25
    for _ in range(steps):
        if time.monotonic() > deadline:
            break
        unit = unit.detach().requires_grad_(True)
        with torch.enable_grad():
            point = lower + unit * width
            margin = _forward_margins(graph, point, spec_matrix, spec_offset, layout)
            grad = torch.autograd.grad(margin.sum(), unit, allow_unused=True)[0] if margin.requires_grad else None
        with torch.no_grad():
            better = margin < best_margin
            best_margin = torch.where(better, margin.detach(), best_margin)
            best_point = torch.where(better.unsqueeze(1), point.detach(), best_point)
            if grad is None or bool((best_margin <= 0).any()):
                break
            unit = (unit - step * grad.sign()).clamp(0, 1)
            step = max(step * 0.85, 0.01)
    return best_point.detach(), best_margin.detach()


# ----------------------------------------------------------------- search
@dataclass
class Queue:
    """Open sub-boxes, batched: flattened bounds, root index, depth, priority key."""

    lower: torch.Tensor
    upper: torch.Tensor
    root: torch.Tensor
    depth: torch.Tensor
    key: torch.Tensor

    def __len__(self) -> int:
        return int(self.lower.shape[0])

    def take(self, count: int, depth_first: bool) -> "Queue":
        """Remove and return ``count`` boxes: the worst keys (or the deepest)."""
        if count >= len(self):
            taken = Queue(self.lower, self.upper, self.root, self.depth, self.key)
            self.keep(torch.zeros(0, dtype=torch.long, device=self.lower.device))
            return taken
        order = torch.argsort(-self.depth.float() if depth_first else self.key)
        chosen, rest = order[:count], order[count:]
        taken = self.subset(chosen)
        self.keep(rest)
        return taken

    def subset(self, index: torch.Tensor) -> "Queue":
        return Queue(self.lower[index], self.upper[index], self.root[index], self.depth[index], self.key[index])

    def keep(self, index: torch.Tensor) -> None:
        self.lower, self.upper = self.lower[index], self.upper[index]
        self.root, self.depth, self.key = self.root[index], self.depth[index], self.key[index]

    def extend(self, other: "Queue") -> None:
        self.lower = torch.cat([self.lower, other.lower])
        self.upper = torch.cat([self.upper, other.upper])
        self.root = torch.cat([self.root, other.root])
        self.depth = torch.cat([self.depth, other.depth])
        self.key = torch.cat([self.key, other.key])


@dataclass
class _Search:
    graph: Graph
    spec_matrix: torch.Tensor   # (P, S, n_out)
    spec_offset: torch.Tensor   # (P, S)
    root_width: torch.Tensor    # (P, n)
    layout: ClauseLayout
    settings: SearchSettings
    deadline: float
    validator: Validator | None
    progress: object | None
    stats: dict = field(default_factory=lambda: {
        "strategy": "input-split", "domains_visited": 0, "max_depth": 0, "passes": 0,
        "candidates_checked": 0, "time_bound": 0.0, "time_attack": 0.0, "time_branch": 0.0})
    counterexample: np.ndarray | None = None

    def try_candidates(self, points: torch.Tensor, margins: torch.Tensor) -> bool:
        """Validate up to a few points with margin ``<= 0`` (best first)."""
        if self.validator is None:
            return False
        hits = torch.nonzero(margins <= 0).flatten()
        if hits.numel() == 0:
            return False
        hits = hits[torch.argsort(margins[hits])][: self.settings.candidates_per_pass]
        for point in points[hits].detach().to("cpu", torch.float64).numpy():
            self.stats["candidates_checked"] += 1
            if self.validator(point):
                self.counterexample = point
                return True
        return False

    def falsify(self, batch: Queue, coeffs_row: torch.Tensor) -> bool:
        """Evaluate the box centres and the vertices minimizing the deciding row."""
        started = time.perf_counter()
        spec, offset = self.spec_matrix[batch.root], self.spec_offset[batch.root]
        centre = (batch.lower + batch.upper) / 2
        vertex = torch.where(coeffs_row > 0, batch.lower, batch.upper)
        points = torch.cat([centre, vertex])
        with torch.no_grad():
            margins = _forward_margins(self.graph, points, torch.cat([spec, spec]), torch.cat([offset, offset]),
                                       self.layout)
        found = self.try_candidates(points, margins)
        self.stats["time_attack"] += time.perf_counter() - started
        return found

    def pgd(self, queue: Queue, count: int = 64, steps: int = 20) -> bool:
        if len(queue) == 0:
            return False
        started = time.perf_counter()
        worst = torch.argsort(queue.key)[:count]
        part = queue.subset(worst)
        points, margins = pgd_in_boxes(self.graph, part.lower, part.upper, self.spec_matrix[part.root],
                                       self.spec_offset[part.root], self.layout, steps, self.deadline)
        found = self.try_candidates(points, margins)
        self.stats["time_attack"] += time.perf_counter() - started
        return found

    def bound(self, batch: Queue) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        started = time.perf_counter()
        lower, coeffs = bound_boxes(self.graph, batch.lower, batch.upper, self.spec_matrix[batch.root],
                                    self.spec_offset[batch.root], self.settings.alpha_iterations, self.deadline)
        verified, key, row = target_rows(self.layout, lower)
        coeffs_row = coeffs[torch.arange(coeffs.shape[0], device=coeffs.device), row]
        self.stats["time_bound"] += time.perf_counter() - started
        return verified, key, coeffs_row

    def branch(self, batch: Queue, coeffs_row: torch.Tensor) -> Queue:
        started = time.perf_counter()
        scores = split_scores(coeffs_row, batch.lower, batch.upper, self.root_width[batch.root],
                              self.settings.branching)
        dims = scores.argmax(dim=1)
        lower, upper = split_boxes(batch.lower, batch.upper, dims)
        children = Queue(lower, upper, batch.root.repeat(2), (batch.depth + 1).repeat(2), batch.key.repeat(2))
        self.stats["time_branch"] += time.perf_counter() - started
        return children

    def run(self, queue: Queue) -> str:
        batch_size = self.settings.batch_size
        while len(queue):
            if time.monotonic() > self.deadline:
                return "timeout"
            depth_first = len(queue) > self.settings.max_domains
            batch = queue.take(batch_size, depth_first)
            pass_started = time.monotonic()
            verified, key, coeffs_row = self.bound(batch)
            self.stats["passes"] += 1
            self.stats["domains_visited"] += len(batch)
            self.stats["max_depth"] = max(self.stats["max_depth"], int(batch.depth.max()))
            open_index = torch.nonzero(~verified).flatten()
            batch.key = key
            open_boxes = batch.subset(open_index)
            if len(open_boxes):
                if self.falsify(open_boxes, coeffs_row[open_index]):
                    return "sat"
                queue.extend(self.branch(open_boxes, coeffs_row[open_index]))
            if self.stats["passes"] % self.settings.attack_interval == 0 and len(queue):
                if self.pgd(queue):
                    return "sat"
            elapsed = time.monotonic() - pass_started
            if self.settings.adaptive_batch:
                if elapsed < TARGET_PASS_SECONDS / 2 and len(queue) > batch_size:
                    batch_size = min(MAX_BATCH, batch_size * 2)
                elif elapsed > TARGET_PASS_SECONDS * 2:
                    batch_size = max(16, batch_size // 2)
            if self.progress is not None:
                worst = float(key.min()) if key.numel() else float("inf")
                if len(queue):
                    worst = min(worst, float(queue.key.min()))
                self.progress({"domains_left": len(queue), "domains_visited": self.stats["domains_visited"],
                               "global_lower": worst, "depth": self.stats["max_depth"]})
        return "unsat"


def input_split_bab(graph: Graph, box_lower, box_upper, spec_matrix, spec_offset, clause_of_row: Sequence[int],
                    config: BabConfig | None = None, deadline: float | None = None,
                    validator: Validator | None = None, progress=None) -> BabOutcome:
    """Decide one property (or several with equal row layout) by input splitting.

    ``box_lower``/``box_upper``: ``(n_in,)`` or ``(P, n_in)`` flattened boxes
    (``P`` roots); ``spec_matrix``: ``(S, n_out)`` or ``(P, S, n_out)``;
    ``spec_offset``: ``(S,)`` or ``(P, S)``; ``clause_of_row[j]``: clause of row
    ``j`` (shared by all roots).  ``validator`` confirms counterexamples
    (flattened float64 points); without one the search never answers ``sat``.
    """
    config = config or BabConfig()
    deadline = float("inf") if deadline is None else deadline
    started = time.perf_counter()
    dtype, device = graph.dtype_device()

    def tensor(value, dims):
        t = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(device=device, dtype=dtype)
        return t.unsqueeze(0) if t.dim() < dims else t

    lower, upper = tensor(box_lower, 2), tensor(box_upper, 2)
    matrix, offset = tensor(spec_matrix, 3), tensor(spec_offset, 2)
    roots = lower.shape[0]
    if matrix.shape[0] != roots:
        matrix, offset = matrix.expand(roots, -1, -1), offset.expand(roots, -1)
    settings = resolve_settings(graph, config)
    layout = ClauseLayout.from_rows(clause_of_row, dtype, device)
    search = _Search(graph, matrix, offset, (upper - lower), layout, settings, deadline, validator, progress)
    search.stats.update(batch_size=settings.batch_size, alpha_iterations=settings.alpha_iterations,
                        branching=settings.branching, roots=roots)
    index = torch.arange(roots, device=device)
    queue = Queue(lower, upper, index, torch.zeros(roots, dtype=torch.long, device=device),
                  torch.full((roots,), -float("inf"), dtype=dtype, device=device))
    status = search.run(queue)
    search.stats["domains_left"] = len(queue)
    search.stats["time"] = time.perf_counter() - started
    return BabOutcome(status, search.counterexample if status == "sat" else None, search.stats)
