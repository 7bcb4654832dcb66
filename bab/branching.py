"""Which neuron to split: BaBSR-style scores and filtered smart branching.

**Coefficient pass.**  One CROWN backward pass from the spec (with the
domains' alphas and split multipliers) records the coefficients ``A`` that
reach every ReLU output, ``sum_s w_s A_s . relu(z)``, and those reaching the
input (whose box minimizer is a cheap attack candidate).

**BaBSR-style score** of an unstable neuron ``l < 0 < u``: how much bound the
relaxation of that neuron costs the spec pass, estimated as the coefficient
times the largest gap of the linear bound it uses:

* ``A < 0`` uses the upper chord ``u (z - l) / (u - l)``, whose largest gap to
  ``relu`` is ``-l u / (u - l)`` (at ``z = 0``);
* ``A > 0`` uses the lower line ``alpha z``, with largest gap
  ``max(-alpha l, (1 - alpha) u)``.

Splitting makes the neuron exact in both children, so the score is an
optimistic estimate of the gain.  Rows of clauses already proven on the
domain get weight 0.

**Filtered smart branching (FSB).**  Take the ``k`` best-scored neurons of each
domain, bound both children of every candidate with one cheap batched pass
(no optimization) and keep the candidate whose worse child is best.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from bounds.constraints import LinearConstraints
from bounds.crown import Propagator
from bounds.graph import Graph
from bounds.ops.base import Bounds

SPEC_START = "__spec__"


@dataclass(frozen=True)
class ReluSite:
    """A ReLU node and the node it reads (where splits and their boxes live)."""

    relu: str
    source: str
    numel: int


def relu_sites(graph: Graph) -> list[ReluSite]:
    """Every ReLU of the graph, in topological order."""
    return [ReluSite(n.name, n.inputs[0], graph.node(n.inputs[0]).numel if graph.has_node(n.inputs[0])
                     else graph.input_numel)
            for n in graph.nodes if n.op.op_type == "Relu"]


@dataclass
class CoefficientPass:
    """Result of :func:`coefficient_pass` for a batch of ``B`` domains."""

    row_lower: torch.Tensor                 # (B, S) plain CROWN bound with the given alphas/betas
    relu_coeffs: dict[str, torch.Tensor]    # relu name -> (B|1, S, *shape)
    input_coeffs: torch.Tensor | None       # (B|1, S, *input_shape)


def coefficient_pass(graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor,
                     spec_matrix: torch.Tensor, spec_offset: torch.Tensor, boxes: Mapping[str, Bounds],
                     alphas: Mapping[str, Mapping[str, torch.Tensor]] | None,
                     constraints: Sequence[tuple[LinearConstraints, torch.Tensor]],
                     sites: Sequence[ReluSite]) -> CoefficientPass:
    """One spec backward pass recording coefficients at the ReLUs and input.

    ``boxes`` must hold every node the relaxations read, ``(B, *shape)``.
    """
    wanted = {s.relu for s in sites} | {graph.input_name}
    recorded: dict[str, list[torch.Tensor]] = {}

    def hook(name: str, coeffs: torch.Tensor) -> None:
        if name in wanted:
            recorded.setdefault(name, []).append(coeffs.detach())

    prop = Propagator(graph, input_lower, input_upper, coefficient_hook=hook)
    bounds = prop.intermediate_bounds(supplied=boxes)[0]
    with torch.no_grad():
        lower = prop.spec_lower(spec_matrix, spec_offset, bounds, alphas, constraints)
    merged = {k: torch.cat(v, dim=1) if len(v) > 1 else v[0] for k, v in recorded.items()}
    relu = {s.relu: merged[s.relu] for s in sites if s.relu in merged}
    return CoefficientPass(lower, relu, merged.get(graph.input_name))


def babsr_scores(sites: Sequence[ReluSite], boxes: Mapping[str, Bounds], coeffs: Mapping[str, torch.Tensor],
                 alphas: Mapping[str, Mapping[str, torch.Tensor]] | None,
                 row_weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score ``(B, numel)`` per split site; ``-inf`` on neurons that are not
    unstable (nothing to split).  ``row_weight``: ``(B, S)``, 0 for rows that
    no longer matter."""
    scores = {}
    for site in sites:
        lower, upper = boxes[site.source]
        batch = lower.shape[0]
        lower, upper = lower.flatten(1), upper.flatten(1)
        unstable = (lower < 0) & (upper > 0)
        A = coeffs.get(site.relu)
        if A is None:
            scores[site.source] = torch.full_like(lower, -float("inf"))
            continue
        A = A.flatten(2).expand(batch, -1, -1)                          # (B, S, n)
        width = (upper - lower).clamp(min=1e-12)
        chord_gap = (-lower * upper / width).clamp(min=0).unsqueeze(1)  # (B, 1, n)
        alpha = None if alphas is None else alphas.get(site.relu, {}).get("alpha")
        if alpha is None:
            alpha = (upper > -lower).to(lower.dtype).unsqueeze(1)
        else:
            alpha = alpha.flatten(2).expand(batch, -1, -1)
        line_gap = torch.maximum(-alpha * lower.unsqueeze(1), (1 - alpha) * upper.unsqueeze(1)).clamp(min=0)
        cost = A.clamp(max=0).neg() * chord_gap + A.clamp(min=0) * line_gap   # (B, S, n)
        score = (cost * row_weight.unsqueeze(-1)).sum(1)
        # tiny tie-breaker so that every unstable neuron beats a stable one
        score = score + 1e-9 * width
        scores[site.source] = torch.where(unstable, score, torch.full_like(score, -float("inf")))
    return scores


@dataclass(frozen=True)
class Decision:
    node: str
    index: int


def top_candidates(scores: Mapping[str, torch.Tensor], k: int) -> list[list[Decision]]:
    """The ``k`` best-scored unstable neurons per domain (fewer when fewer exist)."""
    names = list(scores)
    if not names:
        return []
    flat = torch.cat([scores[n] for n in names], dim=1)                # (B, total)
    offsets = [0]
    for n in names:
        offsets.append(offsets[-1] + scores[n].shape[1])
    k = min(k, flat.shape[1])
    values, index = flat.topk(k, dim=1)
    out = []
    for b in range(flat.shape[0]):
        picks = []
        for v, i in zip(values[b].tolist(), index[b].tolist()):
            if v == -float("inf"):
                break
            j = next(t for t in range(len(names)) if offsets[t] <= i < offsets[t + 1])
            picks.append(Decision(names[j], i - offsets[j]))
        out.append(picks)
    return out


def babsr_decisions(scores: Mapping[str, torch.Tensor]) -> list[Decision | None]:
    """Best-scored neuron per domain, ``None`` when the domain has no unstable neuron."""
    return [picks[0] if picks else None for picks in top_candidates(scores, 1)]


def fsb_decisions(scores: Mapping[str, torch.Tensor], k: int,
                  evaluate: Callable[[list[tuple[int, Decision]]], torch.Tensor]) -> list[Decision | None]:
    """Filtered smart branching.

    ``evaluate(candidates)`` receives ``(domain index, decision)`` pairs and
    returns ``(len, 2)`` child scores (higher is better, ``+inf`` when a child
    is verified); the candidate with the best worse child wins (ties: the
    better sum).  Domains with a single candidate skip the evaluation.
    """
    picks = top_candidates(scores, k)
    pairs = [(b, d) for b, ds in enumerate(picks) if len(ds) > 1 for d in ds]
    chosen: list[Decision | None] = [ds[0] if ds else None for ds in picks]
    if not pairs:
        return chosen
    child = evaluate(pairs)
    worse = child.min(dim=1).values
    both = child.clamp(max=1e9).sum(dim=1)
    best: dict[int, tuple[float, float]] = {}
    for (b, d), w, s in zip(pairs, worse.tolist(), both.tolist()):
        key = (w, s)
        if b not in best or key > best[b]:
            best[b] = key
            chosen[b] = d
    return chosen
