"""ReLU-split branch and bound with beta-CROWN (complete verification).

The property: for every clause ``c`` (a conjunction of rows ``C_j y <= d_j``)
no input of the box satisfies all its rows.  A domain (box + split history)
is *verified* when every clause has a row whose certified lower bound of
``C_j y - d_j`` exceeds :data:`PROOF_TOLERANCE` on it.

Search:

1. **root**: alpha-CROWN over the box (intermediate boxes handed over by the
   incomplete stage are reused); verified -> ``unsat``.
2. each step pops the worst-scored batch of open domains, runs one CROWN pass
   recording coefficients (branching scores, relaxed minimizers = attack
   candidates), picks a neuron per domain (BaBSR or FSB), and bounds both
   children of every domain in one batched alpha/beta-CROWN pass:

   * the children reuse the parent's intermediate boxes with the split neuron
     cut (``[l, 0]`` / ``[0, u]``), measured faster than recomputing them;
   * the split decisions enter as constraints with multipliers beta >= 0,
     warm-started (with alpha) from the parent;
   * a child's row bound is the max of its own and its parent's (it is a
     subset of the parent).

   Verified children are dropped, the rest pushed back.
3. a domain without unstable neurons is linear on its region: it is decided
   exactly by an LP over the box and its split constraints (small nets only).
   A small net (few unstable ReLUs at the root) still open after a second
   goes to the exact MIP over the whole box for half the time left.

Other nonlinear operators with a relaxation (MaxPool, ...) are never split:
they are bounded by their backward rules in every pass, so a fully split
domain of such a net stays ``unknown`` unless its bound proves it.
4. **falsification**: each popped domain's relaxed minimizers are evaluated on
   the network; every ``attack_interval`` batches a short PGD starts from the
   worst domains' minimizers.  Only validator-confirmed points give ``sat``.

Stops at ``unsat`` (queue empty), ``sat``, the deadline (``timeout``, within
about one batch pass) or ``unknown`` (an undecided leaf, queue cap...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from bab.biccos import Biccos, cuts_enabled
from bab.branching import (ReluSite, babsr_decisions, babsr_scores, coefficient_pass,
                           fsb_decisions, relu_sites)
from bab.domains import Domain, DomainStore, capacity_for, stack
from bab.splits import apply_to_boxes, branch, build_constraints, pad_betas, split_nodes, unpad_betas
from bab.types import PROOF_TOLERANCE, BabConfig, BabOutcome, Validator
from bounds.engine import BoundConfig, BoundResult, compute_bounds
from bounds.graph import Graph

SPEC_START = "__spec__"


# ------------------------------------------------------------------ settings
@dataclass
class ReluBabSettings:
    """Resolved knobs (zero-config values from :func:`resolve_settings`)."""

    batch_size: int = 64            # parent domains per step (2x children bounded)
    alpha_iterations: int = 20
    branching: str = "fsb"          # "babsr" | "fsb" (fsb: 3.4x fewer domains on random nets)
    fsb_candidates: int = 3
    attack_interval: int = 5
    memory_bytes: int = 2 * 2 ** 30
    max_domains: int = 2_000_000
    leaf_lp_max_neurons: int = 5000  # exact LP on fully split domains of nets up to this size
    # A search still open after ``mip_after_seconds`` on a net with at most
    # ``mip_max_unstable`` unstable ReLUs at the root hands the whole box to the
    # exact MIP for ``mip_time_share`` of the time left (safenlp 30x128: MIP
    # 0.6 s / 7 s where the search needs 43 s / > 60 s), then goes on.
    mip_max_unstable: int = 200
    mip_after_seconds: float = 1.0
    mip_time_share: float = 0.5


def resolve_settings(graph: Graph, num_rows: int, config: BabConfig) -> ReluBabSettings:
    """Zero-config choice: the batch is sized so that one pass over the
    children's coefficients stays around 2^23 elements (about a second of
    CPU time on the dev nets), within [4, 512]."""
    sites = relu_sites(graph)
    neurons = sum(n.numel for n in graph.nodes) + graph.input_numel
    auto_batch = int(max(4, min(512, 2 ** 23 // max(2 * num_rows * neurons, 1))))
    branching = config.branching if config.branching in ("babsr", "fsb") else "fsb"
    del sites
    return ReluBabSettings(batch_size=config.batch_size or auto_batch,
                           alpha_iterations=config.alpha_iterations or 20,
                           branching=branching, attack_interval=max(1, config.attack_interval),
                           max_domains=config.max_domains)


# ------------------------------------------------------------------ clauses
@dataclass
class Clauses:
    """Row-to-clause bookkeeping: ``member[s, c]`` is True when row ``s`` is in clause ``c``."""

    member: torch.Tensor  # (S, n_clauses) bool

    @classmethod
    def of(cls, clause_of_row, device) -> "Clauses":
        rows = torch.as_tensor(np.asarray(clause_of_row), dtype=torch.long, device=device)
        _, index = torch.unique(rows, return_inverse=True)
        member = torch.zeros(rows.numel(), int(index.max()) + 1, dtype=torch.bool, device=device)
        member[torch.arange(rows.numel(), device=device), index] = True
        return cls(member)

    def clause_lower(self, row_lower: torch.Tensor) -> torch.Tensor:
        """``(B, n_clauses)``: best row bound of each clause."""
        vals = row_lower.unsqueeze(-1).masked_fill(~self.member, -float("inf"))
        return vals.max(dim=1).values

    def score(self, row_lower: torch.Tensor) -> torch.Tensor:
        """``(B,)``: worst clause's best row (verified when > tolerance)."""
        return self.clause_lower(row_lower).min(dim=1).values

    def open_rows(self, row_lower: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` float weights: 1 on rows of clauses not yet proven."""
        open_clause = self.clause_lower(row_lower) <= PROOF_TOLERANCE          # (B, C)
        return (open_clause.float() @ self.member.T.float()).clamp(max=1).to(row_lower.dtype)

    def satisfied(self, margins: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: some clause has every row ``C y - d <= 0`` at the point."""
        ok = (margins.unsqueeze(-1) <= 0) | ~self.member
        return ok.all(dim=1).any(dim=1)

    def violation(self, margins: torch.Tensor) -> torch.Tensor:
        """``(N,)``: min over clauses of max row margin (<= 0 means a clause holds)."""
        vals = margins.unsqueeze(-1).masked_fill(~self.member, -float("inf"))
        return vals.max(dim=1).values.min(dim=1).values


# ------------------------------------------------------------------ the search
@dataclass
class _Search:
    graph: Graph
    lower: torch.Tensor          # (1, *input_shape)
    upper: torch.Tensor
    spec: torch.Tensor           # (1, S, n_out)
    offset: torch.Tensor         # (1, S)
    clauses: Clauses
    settings: ReluBabSettings
    deadline: float
    validator: Validator | None
    sites: list[ReluSite] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    counterexample: np.ndarray | None = None
    biccos: object | None = None   # bab.biccos.Biccos hooks (cuts), or None

    def __post_init__(self) -> None:
        self.sites = relu_sites(self.graph)
        self.order = [s.source for s in self.sites]
        self.relu_only = all(n.op.is_linear or n.op.op_type == "Relu" for n in self.graph.nodes)
        self.shapes = {s.source: self.graph.shape_of(s.source) for s in self.sites}
        self.stats.update(domains_visited=0, batches=0, max_depth=0, leaf_lp=0, undecided_leaves=0,
                          time={"root": 0.0, "branching": 0.0, "bounding": 0.0, "attack": 0.0, "leaf_lp": 0.0})
        self.bound_config = BoundConfig(method="alpha-crown", alpha_iterations=self.settings.alpha_iterations,
                                        early_stop_margin=PROOF_TOLERANCE,
                                        early_stop_mode="any" if self.clauses.member.shape[1] == 1 else "all",
                                        alpha_per_row_cap=2 ** 26)

    def timed(self, phase: str, started: float) -> None:
        self.stats["time"][phase] += time.perf_counter() - started

    # ---------------------------------------------------------- falsification
    def margins(self, points: torch.Tensor) -> torch.Tensor:
        """``(N, S)`` values of ``C y - d`` at ``points (N, *input_shape)``."""
        out = self.graph.forward(points).reshape(points.shape[0], -1)  # scalar outputs too
        return out @ self.spec[0].T - self.offset[0]

    def try_points(self, points: torch.Tensor) -> bool:
        """Validate the points that satisfy a clause (best first, a few at most)."""
        if self.validator is None or points.shape[0] == 0:
            return False
        with torch.no_grad():
            violation = self.clauses.violation(self.margins(points))
        order = torch.argsort(violation)
        for i in order[:4].tolist():
            if float(violation[i]) > 1e-4:  # float32 slack: the validator has the last word
                break
            candidate = points[i].detach().to("cpu", torch.float64).numpy().reshape(-1)
            if self.validator(candidate):
                self.counterexample = candidate
                return True
        return False

    def pgd(self, starts: torch.Tensor, steps: int = 30) -> bool:
        """Projected sign-gradient descent of the clause violation from ``starts``."""
        x = starts.detach().clone()
        span = (self.upper - self.lower)
        for step in range(steps):
            if time.monotonic() > self.deadline:
                return False
            x.requires_grad_(True)
            with torch.enable_grad():
                violation = self.clauses.violation(self.margins(x))
                grad, = torch.autograd.grad(violation.sum(), x)
            with torch.no_grad():
                size = 0.25 * (1 - step / steps) + 0.01
                x = torch.minimum(torch.maximum(x - size * span * grad.sign(), self.lower), self.upper)
                if bool((violation <= 0).any()) and self.try_points(x):
                    return True
        return self.try_points(x.detach())

    def minimizers(self, input_coeffs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Box minimizers of every open row's relaxed bound: ``(N, *input_shape)``."""
        coeffs = input_coeffs.expand(weights.shape[0], -1, *input_coeffs.shape[2:])
        pick = weights > 0
        chosen = coeffs[pick]                                            # (N, *input_shape)
        return torch.where(chosen > 0, self.lower, self.upper)

    # ---------------------------------------------------------------- bounds
    def bound(self, histories, boxes, alphas, betas, *, optimize: bool,
              iterations: int | None = None) -> BoundResult:
        """Bound domains given their (already cut) boxes and warm starts."""
        batch = len(histories)
        nodes = split_nodes(histories, self.order)
        constraints = build_constraints(histories, self.shapes, nodes, self.lower)
        warm_betas = pad_betas(betas, histories, nodes, int(self.spec.shape[1]), self.lower)
        if self.biccos is not None:  # BICCOS cuts ride along as one more constraint set
            cut_constraints, cut_betas = self.biccos.extra(batch, int(self.spec.shape[1]), self.lower)
            constraints, warm_betas = constraints + cut_constraints, warm_betas + cut_betas
        config = self.bound_config if optimize else replace(self.bound_config, method="crown")
        if iterations is not None:
            config = replace(config, alpha_iterations=iterations)
        return compute_bounds(self.graph, self.lower.expand(batch, *self.lower.shape[1:]),
                              self.upper.expand(batch, *self.upper.shape[1:]), self.spec, self.offset,
                              config=config, intermediate=boxes, constraints=constraints,
                              warm_start={"alphas": None if alphas is None else {SPEC_START: alphas},
                                          "betas": warm_betas},
                              deadline=self.deadline)

    def split_point(self, decision) -> float:
        """Where a decision cuts its neuron: 0 for ReLU splits (GenBaB overrides)."""
        return 0.0

    def children(self, parents: list[Domain], decisions: list):
        """Histories, cut boxes, warm starts and parent bounds of both children of each parent."""
        batch = stack(parents)
        histories = []
        for history, d in zip(batch.histories, decisions):
            below, above = branch(d.node, d.index, self.split_point(d))
            histories += [history + (below,), history + (above,)]
        twice = torch.arange(len(parents), device=self.lower.device).repeat_interleave(2)
        boxes = {k: (lo[twice], up[twice]) for k, (lo, up) in batch.boxes.items()}
        boxes = apply_to_boxes(boxes, histories)
        alphas = None if batch.alphas is None else {
            n: {k: v[twice] for k, v in p.items()} for n, p in batch.alphas.items()}
        betas = [batch.betas[i] for i in twice.tolist()]
        return histories, boxes, alphas, betas, batch.row_lower[twice]

    def evaluate_candidates(self, parents: list[Domain], pairs) -> torch.Tensor:
        """Child scores ``(len(pairs), 2)`` of FSB candidates ``(parent index, decision)``
        by one plain CROWN pass."""
        domains = [parents[b] for b, _ in pairs]
        histories, boxes, alphas, betas, parent_lower = self.children(domains, [d for _, d in pairs])
        result = self.bound(histories, boxes, alphas, betas, optimize=False)
        scores = self.clauses.score(torch.maximum(result.lower, parent_lower))
        return scores.reshape(-1, 2)

    # ---------------------------------------------------------- search steps
    def root_domain(self, result: BoundResult, row_lower: torch.Tensor, score: float) -> Domain:
        """The whole box as a domain, warm-started from the root pass."""
        alphas = (result.alphas or {}).get(SPEC_START)
        return Domain((), row_lower[0], score,
                      {k: (lo[0], up[0]) for k, (lo, up) in result.intermediate.items()},
                      None if alphas is None else {n: {k: v[0] for k, v in p.items()} for n, p in alphas.items()},
                      None)

    def root_bounds(self, root: BoundResult | None) -> BoundResult:
        """alpha-CROWN over the whole box, reusing the intermediate boxes of a
        handed-over ``root`` result."""
        return compute_bounds(self.graph, self.lower, self.upper, self.spec, self.offset,
                              config=self.bound_config, intermediate=None if root is None else root.intermediate,
                              deadline=self.deadline)

    def root_step(self, root: BoundResult | None) -> tuple[BoundResult, torch.Tensor, float]:
        """:meth:`root_bounds`, each row kept at least at a handed-over
        ``root``'s bound (its rows come first; rows added here, such as clause
        means, keep their own), timed as root; returns the result, the row
        bounds ``(1, S)`` and the property score (recorded as ``root_bound``)."""
        t0 = time.perf_counter()
        result = self.root_bounds(root)
        row_lower = result.lower
        if root is not None and root.lower.shape[-1] <= row_lower.shape[-1]:
            known = root.lower.to(row_lower).reshape(1, -1)
            row_lower = torch.cat([torch.maximum(row_lower[:, :known.shape[1]], known),
                                   row_lower[:, known.shape[1]:]], dim=1)
        self.timed("root", t0)
        score = float(self.clauses.score(row_lower)[0])
        self.stats["root_bound"] = score
        return result, row_lower, score

    def timed_pgd(self, starts: torch.Tensor) -> bool:
        """PGD from ``starts``, timed as attack."""
        t0 = time.perf_counter()
        found = self.pgd(starts)
        self.timed("attack", t0)
        return found

    def coefficients(self, batch):
        """One CROWN pass over a stacked batch recording coefficients
        (branching scores, relaxed minimizers)."""
        count = len(batch.histories)
        nodes = split_nodes(batch.histories, self.order)
        constraints = build_constraints(batch.histories, self.shapes, nodes, self.lower)
        betas = pad_betas(batch.betas, batch.histories, nodes, int(self.spec.shape[1]), self.lower)
        return coefficient_pass(self.graph, self.lower.expand(count, *self.lower.shape[1:]),
                                self.upper.expand(count, *self.upper.shape[1:]), self.spec, self.offset,
                                batch.boxes, batch.alphas, list(zip(constraints, betas)), self.sites)

    def attack_batch(self, info, weights: torch.Tensor, centre: torch.Tensor) -> bool:
        """Falsify on a popped batch: validate its relaxed minimizers, and every
        ``attack_interval`` batches run a short PGD from them (timed as attack)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            found = info.input_coeffs is not None and self.try_points(self.minimizers(info.input_coeffs, weights))
        if not found and self.stats["batches"] % self.settings.attack_interval == 0:
            starts = self.minimizers(info.input_coeffs, weights)[:32] if info.input_coeffs is not None else centre
            found = self.pgd(starts)
        self.timed("attack", t0)
        return found

    def expand(self, store: DomainStore, splittable: list) -> None:
        """Bound both children of every ``(domain, decision)`` in one batched
        alpha/beta-CROWN pass and push the unverified ones (timed as bounding)."""
        t0 = time.perf_counter()
        histories, boxes, alphas, betas, parent_lower = self.children(
            [d for d, _ in splittable], [dec for _, dec in splittable])
        if self.biccos is not None:
            boxes = self.biccos.propagate(histories, boxes)
        result = self.bound(histories, boxes, alphas, betas, optimize=True)
        child_lower = torch.maximum(result.lower, parent_lower)  # a child is a subset of its parent
        child_scores = self.clauses.score(child_lower)
        self.stats["domains_visited"] += len(histories)
        new_alphas = (result.alphas or {}).get(SPEC_START)
        new_betas = unpad_betas(result.betas or [], histories, split_nodes(histories, self.order))
        if self.biccos is not None:
            self.biccos.observe_betas(result.betas)
            self.biccos.learn(self, histories, result.betas, (child_scores > PROOF_TOLERANCE).tolist(),
                              alphas=new_alphas)
        for i, history in enumerate(histories):
            if float(child_scores[i]) > PROOF_TOLERANCE:
                continue
            store.push(Domain(history, child_lower[i], float(child_scores[i]),
                              {k: (lo[i].clone(), up[i].clone()) for k, (lo, up) in result.intermediate.items()},
                              None if new_alphas is None else {
                                  n: {k: v[i].clone() for k, v in p.items()} for n, p in new_alphas.items()},
                              new_betas[i] if result.betas else None))
        self.stats["max_depth"] = max(self.stats["max_depth"], store.max_depth)
        self.timed("bounding", t0)

    def report(self, progress: Callable[[dict], None] | None, store: DomainStore, started: float) -> None:
        if progress is not None:
            progress({"domains_left": len(store), "domains_visited": self.stats["domains_visited"],
                      "global_lower": store.worst_score(), "elapsed": time.perf_counter() - started})

    # ---------------------------------------------------------------- leaves
    def leaf_lp_applies(self) -> bool:
        """A fully split domain is linear, hence decided by an LP, only when
        every nonlinearity is a ReLU (MaxPool & co. stay relaxed) and the net
        is small."""
        return self.relu_only and sum(s.numel for s in self.sites) <= self.settings.leaf_lp_max_neurons

    def solve_leaf(self, domain: Domain, time_limit: float | None = None) -> str:
        """Exact verdict of a domain by a MIP per clause over its boxes: an LP
        when no neuron is unstable.  ``time_limit``: seconds for all clauses
        (default: until the deadline); running out gives ``unknown``."""
        from bounds.lp import mip_verdict  # HiGHS; only needed here

        self.stats["leaf_lp"] += 1
        stop = self.deadline if time_limit is None else min(self.deadline, time.monotonic() + time_limit)
        boxes = {k: (lo.unsqueeze(0), up.unsqueeze(0)) for k, (lo, up) in domain.boxes.items()}
        member = self.clauses.member
        for c in range(member.shape[1]):
            rows = member[:, c]
            remaining = stop - time.monotonic()
            if remaining <= 0:
                return "timeout" if stop == self.deadline else "unknown"
            verdict, witness = mip_verdict(self.graph, self.lower, self.upper, self.spec[0][rows],
                                           self.offset[0][rows], time_limit=remaining, intermediate=boxes)
            if verdict == "sat":
                point = witness.to(self.lower).reshape(self.lower.shape)
                if self.try_points(point):
                    return "sat"
                return "unknown"
            if verdict != "unsat":
                return "unknown"
        return "unsat"


def _with_clause_means(spec: torch.Tensor, offset: torch.Tensor, clause_of_row):
    """Append, for every clause with several rows, the mean of its rows.

    Sound and useful: if ``mean_j (C_j y - d_j) > 0`` on a domain then some
    row is positive at every point, so the conjunction cannot hold -- a
    combination can be provable where no single row is.  At a concrete point
    the mean row is <= 0 whenever all the clause's rows are, so satisfaction
    checks are unchanged.
    """
    rows = np.asarray(clause_of_row).reshape(-1)
    extra_rows, extra_offsets, extra_clause = [], [], []
    for c in dict.fromkeys(rows.tolist()):
        members = np.flatnonzero(rows == c)
        if len(members) > 1:
            index = torch.as_tensor(members, device=spec.device)
            extra_rows.append(spec[:, index].mean(dim=1, keepdim=True))
            extra_offsets.append(offset[:, index].mean(dim=1, keepdim=True))
            extra_clause.append(c)
    if not extra_rows:
        return spec, offset, rows.tolist()
    return (torch.cat([spec] + extra_rows, dim=1), torch.cat([offset] + extra_offsets, dim=1),
            rows.tolist() + extra_clause)


def _as_input(value, graph: Graph, like: torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    return tensor.to(device=like.device, dtype=like.dtype).reshape((1,) + tuple(graph.input_shape))


def _problem_tensors(graph: Graph, box_lower, box_upper, spec_matrix, spec_offset):
    """``like, lower (1, *in), upper, spec (1, S, n_out), offset (1, S)`` on the graph's device/dtype."""
    dtype, device = graph.dtype_device()
    like = torch.zeros((), dtype=dtype, device=device)  # carries dtype/device for .to()
    lower, upper = _as_input(box_lower, graph, like), _as_input(box_upper, graph, like)
    spec = torch.as_tensor(np.asarray(spec_matrix) if not isinstance(spec_matrix, torch.Tensor) else spec_matrix)
    spec = spec.to(like).reshape(1, -1, graph.output_numel)
    offset = torch.as_tensor(np.asarray(spec_offset) if not isinstance(spec_offset, torch.Tensor) else spec_offset)
    offset = offset.to(like).reshape(1, -1)
    return like, lower, upper, spec, offset


def relu_split_bab(graph: Graph, box_lower, box_upper, spec_matrix, spec_offset, clause_of_row,
                   config: BabConfig, deadline: float, validator: Validator | None,
                   progress: Callable[[dict], None] | None = None, *,
                   root: BoundResult | None = None, settings: ReluBabSettings | None = None,
                   biccos=None) -> BabOutcome:
    """Decide the property ``for all x in box, for all clauses c: not (C_c y <= d_c)``.

    ``spec_matrix`` ``(S, n_out)`` / ``spec_offset`` ``(S,)``: every clause's
    rows stacked; ``clause_of_row[s]`` names row ``s``'s clause.
    ``deadline``: ``time.monotonic()`` value.  ``root``: an alpha-CROWN result
    on the same box and rows whose intermediate boxes are reused.
    Returns ``unsat`` / ``sat`` (validated counterexample) / ``timeout`` /
    ``unknown`` with stats (domains visited, max depth, time per phase).
    """
    started = time.perf_counter()
    like, lower, upper, spec, offset = _problem_tensors(graph, box_lower, box_upper, spec_matrix, spec_offset)
    spec, offset, clause_of_row = _with_clause_means(spec, offset, clause_of_row)
    clauses = Clauses.of(clause_of_row, like.device)
    settings = settings or resolve_settings(graph, int(spec.shape[1]), config)
    search = _Search(graph, lower, upper, spec, offset, clauses, settings, deadline, validator)
    stats = search.stats
    if biccos is None and cuts_enabled(config.use_cuts, graph):
        biccos = Biccos(graph)
    search.biccos = biccos
    stats["settings"] = {"batch_size": settings.batch_size, "alpha_iterations": settings.alpha_iterations,
                         "branching": settings.branching}

    def finish(status: str) -> BabOutcome:
        stats["time"]["total"] = time.perf_counter() - started
        if biccos is not None:
            stats["biccos"] = biccos.summary()
        return BabOutcome(status, search.counterexample if status == "sat" else None, stats)

    if not search.sites:
        stats["reason"] = "no ReLU to split"
        return finish("unknown")

    # ---- root
    centre = (lower + upper) / 2
    if search.try_points(centre):
        return finish("sat")
    result, row_lower, score = search.root_step(root)
    if score > PROOF_TOLERANCE:
        return finish("unsat")
    if search.timed_pgd(torch.cat([centre, lower + (upper - lower) * torch.rand(7, *lower.shape[1:]).to(lower)])):
        return finish("sat")
    root_domain = search.root_domain(result, row_lower, score)
    if biccos is not None and biccos.root_boxes is None:
        biccos.root_boxes = {k: (lo[:1], up[:1]) for k, (lo, up) in result.intermediate.items()}
    root_result = result

    def run_tree(branching, tree_deadline, hooks):  # BICCOS multi-tree phase: harvest cuts
        return relu_split_bab(graph, box_lower, box_upper, spec_matrix, spec_offset, clause_of_row,
                              replace(config, branching=branching), min(tree_deadline, deadline), validator,
                              root=root_result, settings=settings, biccos=hooks)
    store = DomainStore(capacity_for(root_domain, settings.memory_bytes, settings.max_domains))
    store.push(root_domain)
    undecided = False
    unstable_at_root = sum(int(((root_domain.boxes[s.source][0] < 0) & (root_domain.boxes[s.source][1] > 0)).sum())
                           for s in search.sites if s.source in root_domain.boxes)
    mip_pending = search.leaf_lp_applies() and 0 < unstable_at_root <= settings.mip_max_unstable

    # ---- the loop
    while len(store):
        if time.monotonic() > deadline:
            return finish("timeout")
        if mip_pending and time.perf_counter() - started > settings.mip_after_seconds:
            mip_pending = False
            t0 = time.perf_counter()
            verdict = search.solve_leaf(root_domain, settings.mip_time_share * (deadline - time.monotonic()))
            search.timed("leaf_lp", t0)
            stats["root_mip"] = verdict
            if verdict in ("sat", "unsat", "timeout"):
                return finish(verdict)
        if biccos is not None and biccos.tree_due(stats["domains_visited"], time.perf_counter() - started,
                                                  deadline):
            decided = biccos.multi_tree(run_tree, deadline)
            if decided is not None:
                search.counterexample = decided.counterexample
                stats["decided_by_tree"] = True
                return finish(decided.status)
        parents = store.pop(settings.batch_size)
        if biccos is not None:
            parents = biccos.prune(parents)
            if not parents:
                continue
        stats["batches"] += 1
        batch = stack(parents)

        # coefficients: branching scores and attack candidates
        t0 = time.perf_counter()
        info = search.coefficients(batch)
        weights = clauses.open_rows(batch.row_lower)
        scores = babsr_scores(search.sites, batch.boxes, info.relu_coeffs, batch.alphas, weights)
        if biccos is not None:
            scores = biccos.rescore(scores)
        search.timed("branching", t0)

        if search.attack_batch(info, weights, centre):
            return finish("sat")

        t0 = time.perf_counter()
        if settings.branching == "fsb":
            decisions = fsb_decisions(scores, settings.fsb_candidates,
                                      lambda pairs: search.evaluate_candidates(parents, pairs))
        else:
            decisions = babsr_decisions(scores)
        search.timed("branching", t0)

        # fully split domains: decide exactly (small nets), else give up on them
        splittable = []
        for domain, decision in zip(parents, decisions):
            if decision is not None:
                splittable.append((domain, decision))
                continue
            t0 = time.perf_counter()
            verdict = "unknown"
            if search.leaf_lp_applies():
                verdict = search.solve_leaf(domain)
            search.timed("leaf_lp", t0)
            if verdict == "sat":
                return finish("sat")
            if verdict == "timeout":
                return finish("timeout")
            if verdict != "unsat":
                undecided = True
                stats["undecided_leaves"] += 1
        if not splittable:
            continue

        search.expand(store, splittable)
        search.report(progress, store, started)
    return finish("unknown" if undecided else "unsat")

