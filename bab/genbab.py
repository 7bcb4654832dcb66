"""GenBaB: branch and bound on general nonlinearities.

Same search as ReLU-split BaB (:mod:`bab.relu_split`, whose domain store,
split histories, batched beta-CROWN bounding and falsification it reuses),
with general split decisions:

* any element-wise nonlinear neuron ``y = f(z)`` (Sigmoid, Tanh, Sin, Cos,
  Exp, GELU, Pow, ... and ReLU/LeakyReLU/Sign in mixed nets) is split on
  ``z`` at a point ``p``: ``z <= p`` / ``z >= p``.  ``p`` comes from the
  offline lookup table (:mod:`bab.lookup_table`; midpoint without one), 0
  for kinked activations;
* each child's box of ``z`` is cut to ``[l, p]`` / ``[p, u]``, so its
  relaxation is the tighter one of the sub-interval, and the split enters the
  backward pass as the constraint ``+-(z - p) >= 0`` with a multiplier
  beta >= 0 optimized with alpha (any beta is sound);
* the neuron is chosen by BBPS (:mod:`bab.bbps`): a cheap estimate of every
  candidate's children from the current linear bounds, then the top-k are
  bounded for real and the best worse child wins.

Unlike ReLU splitting, a smooth neuron is never "done": domains are split
until their intervals are narrow; a domain with nothing left to split is
undecided (``unknown`` at the end unless a counterexample turns up).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from bab.bbps import SplitSite, bbps_scores, split_points, split_sites, width_scores
from bab.branching import Decision, fsb_decisions, top_candidates
from bab.domains import Domain, DomainStore, capacity_for, stack
from bab.relu_split import Clauses, ReluBabSettings, _problem_tensors, _Search
from bab.types import PROOF_TOLERANCE, BabConfig, BabOutcome, Validator
from bounds.engine import BoundResult
from bounds.graph import Graph


@dataclass(frozen=True)
class GenDecision:
    """Split ``z_node[index]`` at ``point``."""

    node: str
    index: int
    point: float


@dataclass
class GenBabSettings(ReluBabSettings):
    """``branching``: ``"bbps"`` (estimate, then bound the top ``candidates``
    for real) or ``"width"`` (baseline); ``use_lookup_table``: table points
    vs midpoints."""

    branching: str = "bbps"
    candidates: int = 3
    use_lookup_table: bool = True


def resolve_settings(graph: Graph, num_rows: int, config: BabConfig) -> GenBabSettings:
    """Zero-config: batch sized so one children pass stays around 2^23
    coefficient elements (as ReLU-split BaB), within [4, 256]."""
    neurons = sum(n.numel for n in graph.nodes) + graph.input_numel
    auto_batch = int(max(4, min(256, 2 ** 23 // max(2 * num_rows * neurons, 1))))
    branching = config.branching if config.branching in ("bbps", "width") else "bbps"
    return GenBabSettings(batch_size=config.batch_size or auto_batch,
                          alpha_iterations=config.alpha_iterations or 20,
                          branching=branching, attack_interval=max(1, config.attack_interval),
                          max_domains=config.max_domains, use_lookup_table=config.use_lookup_table)


class _GenSearch(_Search):
    """ReLU-split search state with general split sites and split points."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sites: list[SplitSite] = split_sites(self.graph)
        self.order = [s.source for s in self.sites]
        self.shapes = {s.source: self.graph.shape_of(s.source) for s in self.sites}

    def split_point(self, decision: GenDecision) -> float:
        return decision.point


def _decide(search: _GenSearch, parents: list[Domain], batch, info, settings: GenBabSettings
            ) -> list[GenDecision | None]:
    """One split decision per parent (``None``: nothing left to split)."""
    weights = search.clauses.open_rows(batch.row_lower)
    if settings.branching == "width":
        scores = width_scores(search.sites, batch.boxes, info.relu_coeffs, weights)
        points = {s.source: _points(search, s, batch.boxes) for s in search.sites}
        picks = top_candidates(scores, 1)
        return [_with_point(p[0], points, b) if p else None for b, p in enumerate(picks)]
    scores, points = bbps_scores(search.sites, batch.boxes, info.relu_coeffs, batch.alphas,
                                 info.row_lower, search.clauses.score, settings.use_lookup_table)

    def evaluate(pairs: list[tuple[int, Decision]]) -> torch.Tensor:
        return search.evaluate_candidates(parents, [(b, _with_point(d, points, b)) for b, d in pairs])

    chosen = fsb_decisions(scores, settings.candidates, evaluate)
    return [None if d is None else _with_point(d, points, b) for b, d in enumerate(chosen)]


def _points(search: _GenSearch, site: SplitSite, boxes) -> torch.Tensor:
    lower, upper = boxes[site.source]
    return split_points(site, lower.flatten(1), upper.flatten(1), search.settings.use_lookup_table)


def _with_point(decision: Decision, points, b: int) -> GenDecision:
    """Attach domain ``b``'s split point of the chosen neuron."""
    return GenDecision(decision.node, decision.index, float(points[decision.node][b, decision.index]))


def genbab_bab(graph: Graph, box_lower, box_upper, spec_matrix, spec_offset, clause_of_row,
               config: BabConfig, deadline: float, validator: Validator | None,
               progress: Callable[[dict], None] | None = None, *,
               root: BoundResult | None = None, settings: GenBabSettings | None = None) -> BabOutcome:
    """Decide ``for all x in box, for all clauses c: not (C_c y <= d_c)`` by GenBaB.

    Same arguments and outcome as :func:`bab.relu_split.relu_split_bab`.
    """
    started = time.perf_counter()
    like, lower, upper, spec, offset = _problem_tensors(graph, box_lower, box_upper, spec_matrix, spec_offset)
    clauses = Clauses.of(clause_of_row, like.device)
    settings = settings or resolve_settings(graph, int(spec.shape[1]), config)
    search = _GenSearch(graph, lower, upper, spec, offset, clauses, settings, deadline, validator)
    stats = search.stats
    stats["settings"] = {"batch_size": settings.batch_size, "alpha_iterations": settings.alpha_iterations,
                         "branching": settings.branching, "lookup_table": settings.use_lookup_table}
    stats["split_kinds"] = {}

    def finish(status: str) -> BabOutcome:
        stats["time"]["total"] = time.perf_counter() - started
        return BabOutcome(status, search.counterexample if status == "sat" else None, stats)

    if not search.sites:
        stats["reason"] = "no element-wise nonlinearity to split"
        return finish("unknown")

    # ---- root
    centre = (lower + upper) / 2
    if search.try_points(centre):
        return finish("sat")
    result, row_lower, score = search.root_step(root)
    if score > PROOF_TOLERANCE:
        return finish("unsat")
    gen = torch.Generator(device="cpu").manual_seed(0)
    randoms = torch.rand((7,) + tuple(lower.shape[1:]), generator=gen).to(lower)
    if search.timed_pgd(torch.cat([centre, lower + (upper - lower) * randoms])):
        return finish("sat")
    root_domain = search.root_domain(result, row_lower, score)
    store = DomainStore(capacity_for(root_domain, settings.memory_bytes, settings.max_domains))
    store.push(root_domain)
    undecided = False
    kinds = {s.source: s.op.op_type for s in search.sites}

    while len(store):
        if time.monotonic() > deadline:
            return finish("timeout")
        parents = store.pop(settings.batch_size)
        stats["batches"] += 1
        batch = stack(parents)

        t0 = time.perf_counter()
        info = search.coefficients(batch)
        search.timed("branching", t0)

        if search.attack_batch(info, clauses.open_rows(batch.row_lower), centre):
            return finish("sat")

        t0 = time.perf_counter()
        decisions = _decide(search, parents, batch, info, settings)
        search.timed("branching", t0)
        splittable = [(d, dec) for d, dec in zip(parents, decisions) if dec is not None]
        if len(splittable) < len(parents):
            undecided = True
            stats["undecided_leaves"] += len(parents) - len(splittable)
        if not splittable:
            continue
        for _, dec in splittable:
            kind = kinds[dec.node]
            stats["split_kinds"][kind] = stats["split_kinds"].get(kind, 0) + 1

        search.expand(store, splittable)
        search.report(progress, store, started)
    return finish("unknown" if undecided else "unsat")
