"""alpha-CROWN (and joint beta optimization).

Every relaxation with free parameters (ReLU's lower slope ``alpha in [0, 1]``,
tangent points of S-shaped activations, ...) gives a valid bound for *any*
feasible value, so the spec lower bound ``L(alpha, beta)`` may be maximized by
projected gradient ascent (Adam, exponentially decaying step size, projection
by each operator's ``clip_params`` and ``beta >= 0``).  Each (start node,
nonlinear node) pair owns its parameters — a backward pass from a different
start wants different slopes — with one value per start row when that is
cheap.  The best bound per row over all iterations is kept, starting from the
plain CROWN bound, so the result is never looser than CROWN.

With ``optimize_intermediate`` every iteration re-derives the intermediate
boxes with their own parameters; each box is intersected with the tightest
box seen so far (every one of them is valid), so they only improve.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from bounds.constraints import LinearConstraints
from bounds.crown import Propagator, RowSet
from bounds.ops.base import Bounds, ElementwiseNonlinear

SPEC_START = "__spec__"  # key of the backward pass started at the spec

AlphaTable = dict[str, dict[str, dict[str, torch.Tensor]]]  # start -> node -> name -> tensor


@dataclass
class AlphaSettings:
    iterations: int
    lr: float            # ReLU-like slopes (parameters named "alpha")
    tangent_lr: float    # every other relaxation parameter (tangent points, ...)
    beta_lr: float
    lr_decay: float
    optimize_intermediate: bool
    per_row_cap: int
    early_stop_margin: float | None
    early_stop_mode: str  # "all" rows above the margin, or "any" row
    deadline: float | None = None


@dataclass
class AlphaOutcome:
    lower: torch.Tensor          # (B, S) best lower bound per row
    bounds: dict[str, Bounds]    # tightest intermediate boxes
    alphas: AlphaTable           # parameters (spec start: best per row)
    betas: list[torch.Tensor]    # best per row, (B, S, K) each
    stats: dict = field(default_factory=dict)


def init_alphas(prop: Propagator, bounds: Mapping[str, Bounds], starts: Mapping[str, int],
                per_row_cap: int, warm: AlphaTable | None = None) -> AlphaTable:
    """Leaf parameter tensors ``(B, R, *shape)`` per start and nonlinear node.

    ``starts`` maps each start (``SPEC_START`` or a node name) to its row
    count; ``R`` is that count when ``B * R * numel`` fits ``per_row_cap``,
    else 1 (shared by all rows).  Per-row values are used only for
    element-wise relaxations (their base ``backward`` broadcasts parameters
    against ``(B, S, *shape)``) and for operators that declare
    ``per_row_params = True``; the others get ``R = 1`` — e.g. Mul2 squeezes
    the row axis of its mixing weights, and per-row weights there gave
    unsound bounds on ml4acopf.  Warm-start tensors of the same shape win.
    """
    graph = prop.graph
    table: AlphaTable = {}
    for start, num_rows in starts.items():
        anchor = graph.output_name if start == SPEC_START else start
        per_node: dict[str, dict[str, torch.Tensor]] = {}
        for node in prop.ancestors(anchor):
            if node.op.is_linear:
                continue
            init = node.op.init_params([bounds[i] for i in node.inputs])
            if not init:
                continue
            params = {}
            per_row_ok = isinstance(node.op, ElementwiseNonlinear) or getattr(node.op, "per_row_params", False)
            for key, value in init.items():
                cheap = value.shape[0] * num_rows * value[0, 0].numel() <= per_row_cap
                rows = num_rows if per_row_ok and cheap else 1
                shape = (value.shape[0], rows) + tuple(value.shape[2:])
                old = None if warm is None else warm.get(start, {}).get(node.name, {}).get(key)
                if old is not None and tuple(old.shape) == shape:
                    tensor = old.detach().to(value).clone()
                else:
                    tensor = value.expand(shape).clone()
                params[key] = tensor.requires_grad_(True)
            per_node[node.name] = params
        if per_node:
            table[start] = per_node
    return table


def _leaves(table: AlphaTable, slopes: bool) -> list[torch.Tensor]:
    """Parameters named ``alpha`` (``slopes=True``) or all the others."""
    return [t for per_node in table.values() for params in per_node.values()
            for key, t in params.items() if (key == "alpha") == slopes]


def _project(prop: Propagator, table: AlphaTable) -> None:
    for per_node in table.values():
        for name, params in per_node.items():
            prop.graph.node(name).op.clip_params(params)


def optimize(prop: Propagator, spec_matrix: torch.Tensor, spec_offset: torch.Tensor | None,
             crown_bounds: dict[str, Bounds], crown_lower: torch.Tensor,
             row_sets: dict[str, RowSet], supplied: Mapping[str, Bounds],
             constraints: Sequence[LinearConstraints], betas: Sequence[torch.Tensor],
             settings: AlphaSettings, warm: AlphaTable | None = None) -> AlphaOutcome:
    """Maximize the spec lower bound over relaxation parameters (and betas).

    ``crown_bounds``/``crown_lower``: the plain CROWN result (starting point,
    and the floor of every returned bound).  ``row_sets``: the neurons whose
    intermediate bounds are re-derived when ``optimize_intermediate``.
    """
    started = time.perf_counter()
    num_rows = int(spec_matrix.shape[1])
    starts = {SPEC_START: num_rows}
    if settings.optimize_intermediate:
        starts.update({name: rows.num_rows for name, rows in row_sets.items()})
    with torch.no_grad():
        table = init_alphas(prop, crown_bounds, starts, settings.per_row_cap, warm)
    beta_leaves = [b.detach().clone().clamp_(min=0).requires_grad_(True) for b in betas]
    groups = []
    if _leaves(table, True):
        groups.append({"params": _leaves(table, True), "lr": settings.lr})
    if _leaves(table, False):
        groups.append({"params": _leaves(table, False), "lr": settings.tangent_lr})
    if beta_leaves:
        groups.append({"params": beta_leaves, "lr": settings.beta_lr})

    best_lower = crown_lower.detach().clone()
    best_spec = {n: {k: v.detach().clone() for k, v in p.items()} for n, p in table.get(SPEC_START, {}).items()}
    best_betas = [b.detach().clone() for b in beta_leaves]
    reference = {k: (v[0].detach(), v[1].detach()) for k, v in crown_bounds.items()}
    stats = {"iterations": 0, "stopped": "iterations"}
    if not groups:
        return AlphaOutcome(best_lower, reference, table, best_betas, stats)
    optimizer = Adam(groups, settings.lr_decay)

    for iteration in range(settings.iterations):
        if _proven(best_lower, settings):
            stats["stopped"] = "proven"
            break
        if settings.deadline is not None and time.monotonic() > settings.deadline:
            stats["stopped"] = "deadline"
            break
        with torch.enable_grad():
            if settings.optimize_intermediate:
                bounds, _ = prop.intermediate_bounds(supplied, reference, row_sets, table)
            else:
                bounds = crown_bounds
            lower = prop.spec_lower(spec_matrix, spec_offset, bounds, table.get(SPEC_START),
                                    list(zip(constraints, beta_leaves)))
            loss = -lower.sum()
        stats["iterations"] = iteration + 1
        with torch.no_grad():
            _keep_best(lower.detach(), best_lower, table.get(SPEC_START, {}), best_spec,
                       beta_leaves, best_betas)
            if settings.optimize_intermediate:
                for name in reference:
                    if name in bounds:
                        lo, up = bounds[name]
                        ref_lo, ref_up = reference[name]
                        reference[name] = (torch.maximum(ref_lo, lo.detach()), torch.minimum(ref_up, up.detach()))
        if _proven(best_lower, settings):
            stats["stopped"] = "proven"
            break
        if not loss.requires_grad:  # every relaxed node folded to a constant: nothing to optimize
            stats["stopped"] = "constant"
            break
        grads = torch.autograd.grad(loss, optimizer.params, allow_unused=True)
        with torch.no_grad():
            optimizer.step(grads)
            _project(prop, table)
            for beta in beta_leaves:
                beta.clamp_(min=0)

    stats["time"] = time.perf_counter() - started
    alphas = {start: {n: {k: v.detach() for k, v in p.items()} for n, p in per_node.items()}
              for start, per_node in table.items()}
    if best_spec:
        alphas[SPEC_START] = best_spec
    return AlphaOutcome(best_lower, reference, alphas, best_betas, stats)


class Adam:
    """Adam ascent on the bound (descent on ``loss``), step size decayed by
    ``decay`` every step.  Hand-written: ``torch.optim`` pulls in
    ``torch._dynamo`` on first use, seconds of start-up on CPU."""

    def __init__(self, groups: list[dict], decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for g in groups for p in g["params"]]
        self.lrs = [g["lr"] for g in groups for _ in g["params"]]
        self.decay, self.betas, self.eps = decay, betas, eps
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def step(self, grads: Sequence[torch.Tensor | None]) -> None:
        self.steps += 1
        b1, b2 = self.betas
        scale1, scale2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        shrink = self.decay ** (self.steps - 1)
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            if grad is None:
                continue
            self.first[i].mul_(b1).add_(grad, alpha=1 - b1)
            self.second[i].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (self.second[i] / scale2).sqrt_().add_(self.eps)
            param.addcdiv_(self.first[i], denom, value=-self.lrs[i] * shrink / scale1)


def _proven(best_lower: torch.Tensor, settings: AlphaSettings) -> bool:
    if settings.early_stop_margin is None:
        return False
    above = best_lower > settings.early_stop_margin
    if settings.early_stop_mode == "any":
        return bool(above.any(dim=1).all())
    return bool(above.all())


def _keep_best(lower: torch.Tensor, best_lower: torch.Tensor, spec_params: dict, best_spec: dict,
               beta_leaves: list[torch.Tensor], best_betas: list[torch.Tensor]) -> None:
    """Per row (B, S): where ``lower`` improved, record it with its parameters."""
    improved = lower > best_lower
    if lower.shape != best_lower.shape:  # B broadcast: keep shapes stable
        lower = lower.expand_as(best_lower)
        improved = improved.expand_as(best_lower)
    best_lower.copy_(torch.where(improved, lower, best_lower))
    for name, params in spec_params.items():
        for key, value in params.items():
            if value.shape[1] == improved.shape[1] and value.shape[0] == improved.shape[0]:
                mask = improved.reshape(improved.shape + (1,) * (value.dim() - 2))
                best_spec[name][key] = torch.where(mask, value.detach(), best_spec[name][key])
            elif bool(improved.all()):
                best_spec[name][key] = value.detach().clone()
    for beta, best in zip(beta_leaves, best_betas):
        mask = improved.unsqueeze(-1) if beta.shape[:2] == improved.shape else None
        if mask is not None:
            best.copy_(torch.where(mask, beta.detach(), best))
