"""Public entry point of the bound engine: :func:`compute_bounds`.

Given a graph, an input box ``[input_lower, input_upper]`` (``(B, *input_shape)``,
one box per BaB domain) and a spec matrix ``C`` (``(B|1, S, n_out)``), it
returns lower (and optionally upper) bounds of ``C @ flatten(y) - d`` valid for
every input of each box, by

* ``"ibp"``:         interval arithmetic;
* ``"crown"``:       CROWN with CROWN intermediate bounds (intersected with IBP);
* ``"alpha-crown"``: CROWN, then optimized relaxation slopes (and betas).

Linear constraints (split decisions, cuts) holding on the domain enter the
pass from the spec through multipliers ``beta >= 0`` (see
:mod:`bounds.constraints`); they are optimized in alpha-crown mode and taken
from ``warm_start`` (or zero) otherwise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import torch

from bounds.alpha import AlphaSettings, optimize
from bounds.constraints import LinearConstraints, as_constraint_list, initial_betas
from bounds.crown import Propagator
from bounds.forward import ForwardSweep, backward_cost, free_inputs
from bounds.graph import Graph
from bounds.ibp import interval_bounds, spec_interval
from bounds.ops.base import Bounds

METHODS = ("ibp", "crown", "alpha-crown")


@dataclass
class BoundConfig:
    """Knobs of :func:`compute_bounds` (defaults chosen by measurement, see
    ``benchmarks/bound_speed.py``).

    ``max_coeff_elements`` caps ``B * rows * widest_node`` of one backward
    pass; larger row sets are chunked.  ``alpha_lr`` is the Adam step for
    ReLU-like slopes (parameters named ``alpha``), ``tangent_lr`` for the
    parameters of other relaxations (measured: sigmoid tangents want ~10x
    smaller steps).  ``optimize_intermediate``: re-derive intermediate bounds
    with their own parameters in every iteration; ``"auto"`` does it when the
    cost estimate ``sum(rows * elements on the backward path)`` of one CROWN
    sweep is at most ``auto_intermediate_limit`` (it paid +0.26 on ACAS Xu and
    +0.16 on mnist 256x2 for ~5x time, but only +0.003 on oval21 for 12x).  ``early_stop_margin``: stop the
    optimization once every row's (``early_stop_mode="all"``) or, per domain,
    some row's (``"any"``: a clause is a conjunction, one violated row
    suffices) lower bound exceeds it.  ``forward_reference``: intersect
    forward-mode linear bounds over the free inputs (:mod:`bounds.forward`,
    advanced node by node on the boxes kept so far) into every intermediate
    box before its rows are chosen; backward passes then only go to the
    neurons those boxes leave unstable.
    ``"auto"`` does it where backward passes are expensive and the forward
    pass is not: the backward cost estimate (every neuron a relaxation reads
    times the elements on its path, :func:`bounds.forward.backward_cost`) is
    at least ``forward_min_backward`` and ``forward_min_ratio`` times the
    forward cost ``(free inputs + 1) * sum(node sizes)``, which must stay
    under ``forward_limit`` for the batch (cgan, 4 free inputs: intermediate
    bounds 25.5 s -> 3.0 s, tighter on 5 of 7 layers).  Not on cheap nets:
    CROWN's default slopes are not monotone in the boxes, and on ACAS Xu
    input-split BaB the tighter boxes cost 10x more domains (54k vs 6k).
    """

    method: str = "crown"
    alpha_iterations: int = 20
    alpha_lr: float = 0.25
    tangent_lr: float = 0.02
    beta_lr: float = 0.05
    lr_decay: float = 0.98
    optimize_intermediate: bool | str = "auto"
    auto_intermediate_limit: float = 2e6
    alpha_per_row_cap: int = 2 ** 21
    max_coeff_elements: int = 2 ** 24
    early_stop_margin: float | None = None
    early_stop_mode: str = "all"
    forward_reference: bool | str = "auto"
    forward_limit: float = 2 ** 25
    forward_min_backward: float = 1e7
    forward_min_ratio: float = 8.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown bound method {self.method!r}; expected one of {METHODS}")
        if self.early_stop_mode not in ("all", "any"):
            raise ValueError(f"early_stop_mode must be 'all' or 'any', not {self.early_stop_mode!r}")


@dataclass
class BoundResult:
    """Bounds of ``C y - d`` per domain and row, plus what BaB reuses.

    ``intermediate``: box of every node read by a nonlinear operator (and of the
    output), ``(B, *shape)`` each.  ``alphas``: optimized relaxation
    parameters, ``{start: {node: {name: (B, R, *shape)}}}`` with start
    ``"__spec__"`` for the spec pass.  ``betas``: one ``(B, S, K)`` tensor per
    constraint set, in the order given (rows: the spec rows, followed by the
    negated rows when ``want_upper``).
    """

    lower: torch.Tensor
    upper: torch.Tensor | None
    intermediate: dict[str, Bounds]
    alphas: dict | None = None
    betas: list[torch.Tensor] | None = None
    stats: dict = field(default_factory=dict)


def _prepare_spec(spec_matrix, spec_offset, like: torch.Tensor):
    spec_matrix = torch.as_tensor(spec_matrix).to(device=like.device, dtype=like.dtype)
    if spec_matrix.dim() == 2:
        spec_matrix = spec_matrix.unsqueeze(0)
    if spec_offset is not None:
        spec_offset = torch.as_tensor(spec_offset).to(device=like.device, dtype=like.dtype)
        if spec_offset.dim() == 1:
            spec_offset = spec_offset.unsqueeze(0)
    return spec_matrix, spec_offset


def _warm(warm_start, key):
    if warm_start is None:
        return None
    if isinstance(warm_start, BoundResult):
        return getattr(warm_start, key)
    return warm_start.get(key)


def compute_bounds(graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor,
                   spec_matrix: torch.Tensor, spec_offset: torch.Tensor | None = None, *,
                   config: BoundConfig | None = None,
                   intermediate: Mapping[str, Bounds] | None = None,
                   constraints: LinearConstraints | list[LinearConstraints] | None = None,
                   want_upper: bool = False,
                   warm_start: BoundResult | Mapping | None = None,
                   deadline: float | None = None) -> BoundResult:
    """Bounds of ``spec_matrix @ flatten(y) - spec_offset`` over the input box.

    ``intermediate``: boxes known to hold in the domain for some nodes (BaB's
    split bounds); used for those nodes, the rest are computed.
    ``warm_start``: a previous :class:`BoundResult` or ``{"alphas", "betas"}``
    whose tensors are reused when their shapes match.  ``deadline``: a
    ``time.monotonic()`` value after which the optimization stops (the bound
    returned is still valid).
    """
    config = config or BoundConfig()
    started = time.perf_counter()
    spec_matrix, spec_offset = _prepare_spec(spec_matrix, spec_offset, input_lower)
    num_rows = int(spec_matrix.shape[1])
    if want_upper:  # upper(C y - d) = -lower(-C y + d): bound both as one row set
        spec_matrix = torch.cat([spec_matrix, -spec_matrix], dim=1)
        if spec_offset is not None:
            spec_offset = torch.cat([spec_offset, -spec_offset], dim=1)
    constraint_list = as_constraint_list(constraints)
    stats: dict = {"method": config.method}

    with torch.no_grad():
        if config.method == "ibp":
            boxes = interval_bounds(graph, input_lower, input_upper, intermediate)
            lower, upper = spec_interval(spec_matrix[:, :num_rows], *boxes[graph.output_name],
                                         None if spec_offset is None else spec_offset[:, :num_rows])
            stats["time"] = time.perf_counter() - started
            keep = {name: boxes[name] for name in _relaxed_nodes(graph)}
            return BoundResult(lower, upper if want_upper else None, keep, None, None, stats)

        prop = Propagator(graph, input_lower, input_upper, config.max_coeff_elements, deadline=deadline)
        boxes, row_sets = prop.intermediate_bounds(
            supplied=intermediate, forward=forward_sweep(graph, input_lower, input_upper, intermediate, config))
        output_box = boxes[graph.output_name]
        ibp_lower = spec_interval(spec_matrix, *output_box, spec_offset)[0]
        betas = _warm(warm_start, "betas")
        if betas is None or len(betas) != len(constraint_list) or any(
                b.shape[1] != spec_matrix.shape[1] for b in betas):
            betas = initial_betas(constraint_list, prop.batch, int(spec_matrix.shape[1]), input_lower)
        else:
            betas = [b.to(input_lower).clamp(min=0) for b in betas]
        lower = prop.spec_lower(spec_matrix, spec_offset, boxes, None, list(zip(constraint_list, betas)))
        lower = torch.maximum(lower, ibp_lower)
        stats["crown_time"] = time.perf_counter() - started
        stats["unstable_rows"] = {k: int(v.index.numel()) for k, v in row_sets.items()}

    alphas = None
    if config.method == "alpha-crown":
        optimize_intermediate = config.optimize_intermediate
        if optimize_intermediate == "auto":
            optimize_intermediate = prop.sweep_cost(row_sets) <= config.auto_intermediate_limit
        stats["optimize_intermediate"] = bool(optimize_intermediate)
        settings = AlphaSettings(config.alpha_iterations, config.alpha_lr, config.tangent_lr, config.beta_lr,
                                 config.lr_decay, bool(optimize_intermediate), config.alpha_per_row_cap,
                                 config.early_stop_margin, config.early_stop_mode, deadline)
        outcome = optimize(prop, spec_matrix, spec_offset, boxes, lower, row_sets, intermediate or {},
                           constraint_list, betas, settings, _warm(warm_start, "alphas"))
        lower, boxes, alphas, betas = outcome.lower, outcome.bounds, outcome.alphas, outcome.betas
        stats["alpha"] = outcome.stats

    stats.update(prop.stats)
    stats["time"] = time.perf_counter() - started
    upper = -lower[:, num_rows:] if want_upper else None
    keep = {name: boxes[name] for name in _relaxed_nodes(graph) if name in boxes}
    return BoundResult(lower[:, :num_rows].detach(), None if upper is None else upper.detach(), keep,
                       alphas, betas if constraint_list else None, stats)


def forward_sweep(graph: Graph, input_lower: torch.Tensor, input_upper: torch.Tensor,
                  intermediate: Mapping[str, Bounds] | None = None,
                  config: BoundConfig | None = None) -> ForwardSweep | None:
    """A forward-mode sweep for :meth:`Propagator.intermediate_bounds`, or
    None when it would not pay (see ``BoundConfig.forward_reference``)."""
    config = config or BoundConfig()
    if config.forward_reference in (False, "off"):
        return None
    relaxed = [n for n in graph.nodes if not n.op.is_linear]
    if intermediate is not None and all(i in intermediate for n in relaxed for i in n.inputs):
        return None   # every box a relaxation reads is given (ReLU-split BaB)
    if config.forward_reference not in (True, "on"):
        backward = backward_cost(graph)   # cached per graph: most nets stop here, before counting free inputs
        if backward < config.forward_min_backward:
            return None
        forward = (int(free_inputs(input_lower, input_upper).numel()) + 1) * sum(n.numel for n in graph.nodes)
        if backward < config.forward_min_ratio * forward or int(input_lower.shape[0]) * forward > config.forward_limit:
            return None
    return ForwardSweep(graph, input_lower, input_upper)


def _relaxed_nodes(graph: Graph) -> list[str]:
    names = [i for n in graph.nodes if not n.op.is_linear for i in n.inputs]
    names.append(graph.output_name)
    return list(dict.fromkeys(names))
